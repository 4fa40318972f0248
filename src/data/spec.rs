//! Data specs (`fashion-mnist`, `idx:DIR`, `cifar10:DIR`, `cifar100:DIR`, `folder:DIR`, `builtin`) and their train/test splits.
