//! The built-in dataset, generated in code from a seed.
