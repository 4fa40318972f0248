//! Image folders (PNG/JPEG through the `image` crate), labeled or unlabeled.
