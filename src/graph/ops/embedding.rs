//! Token embedding nodes (PyTorch's `nn.Embedding`, and `nn.EmbeddingBag` with mode
//! `mean`): the token ids set with [`crate::graph::Graph::set_tokens`] looked up in the
//! node's table, on [`crate::kernels::embedding`].

use crate::error::Result;
use crate::kernels::embedding::{
    embedding_backward, embedding_bag_mean_backward, embedding_bag_mean_forward, embedding_forward,
    Embedding,
};

/// Token ids looked up in `table`: `N x L` ids to an `N x dim x 1 x L` image, or with
/// `mean` to the `N x dim` mean of each row's non-padding embeddings.
#[derive(Debug)]
pub(crate) struct EmbeddingNode {
    /// The table's parameter (`vocab x dim`).
    pub(crate) table: usize,
    /// `N x L` token ids (all `padding`, or 0, until set).
    pub(crate) ids: Vec<u32>,
    pub(crate) g: Embedding,
    pub(crate) mean: bool,
}

// table [vocab, dim], ids [N, L] -> y [N, dim, 1, L], or with `mean` y [N, dim]

/// Gathers the embeddings of the node's ids into `y`.
pub(crate) fn forward(e: &EmbeddingNode, table: &[f32], y: &mut [f32]) -> Result<()> {
    if e.mean {
        embedding_bag_mean_forward(&e.g, table, &e.ids, y)
    } else {
        embedding_forward(&e.g, table, &e.ids, y)
    }
}

/// The table's gradient `dtable` (overwritten): each non-padding token gets its position's
/// gradient, or with `mean` its row's gradient divided by the row's count of such tokens.
/// The ids get no gradient.
pub(crate) fn backward(e: &EmbeddingNode, dy: &[f32], dtable: &mut [f32]) -> Result<()> {
    if e.mean {
        embedding_bag_mean_backward(&e.g, &e.ids, dy, dtable)
    } else {
        embedding_backward(&e.g, &e.ids, dy, dtable)
    }
}
