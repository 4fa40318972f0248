//! Contrastive objectives: the normalized similarity GEMM, NT-Xent (SimCLR) and the Quick
//! Thoughts objectives, streamed over tiles so no N x N matrix is ever stored.

pub mod ntxent;
pub mod quickthought;
pub mod similarity;
