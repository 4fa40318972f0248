//! Evaluation of frozen features: the linear probe (standardize, multinomial logistic
//! regression by L-BFGS) and the weighted kNN monitor.
//!
//! - [`probe`]: the linear-probe protocol (label shares, `lambda` selection, folds,
//!   the report); its parts are [`standardize`] (per-feature z-scores), [`logistic`]
//!   (the regularized multinomial logistic objective and classifier) and [`lbfgs`] (a
//!   generic L-BFGS minimizer). Their public items are also re-exported from [`probe`].
//! - [`knn`]: the weighted kNN monitor.

mod check;
pub mod knn;
pub mod lbfgs;
pub mod logistic;
pub mod probe;
pub mod standardize;
