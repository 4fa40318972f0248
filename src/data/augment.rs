//! SimCLR and RotNet augmentations on f32 image tensors.
