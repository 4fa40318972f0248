//! Training: the methods (SimCLR and RotNet on images, Quick Thoughts on text) and the
//! training state on disk.

pub mod image;
pub mod state;
pub mod text;

pub use state::{
    load, resume_latest, save, save_in, Metadata, OPTIMIZER_KEY, OPTIMIZER_STEPS_KEY,
};
