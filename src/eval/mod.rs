//! Evaluation of frozen features: the linear probe (standardize, multinomial logistic
//! regression by L-BFGS) and the weighted kNN monitor.

pub mod knn;
pub mod probe;
