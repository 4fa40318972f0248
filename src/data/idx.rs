//! IDX files (MNIST, Fashion-MNIST), raw or gzip-compressed.
