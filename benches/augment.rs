//! Criterion benchmark of the SimCLR augmentation pipeline (filled in with the augmentations).
fn main() {}
