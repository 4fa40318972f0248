//! Argument checks shared by the linear probe's parts (standardizer, logistic regression,
//! protocol): every failure is an [`Error`], never a panic.

use crate::error::{Error, Result};

const OP: &str = "probe";

pub(super) fn invalid(msg: String) -> Error {
    Error::InvalidArgument { op: OP, msg }
}

pub(super) fn mismatch(what: &'static str, got: usize, want: usize) -> Error {
    Error::ShapeMismatch {
        op: what,
        lhs: [got].into(),
        rhs: [want].into(),
    }
}

/// Checks that `x` holds `n x dim` finite values.
pub(super) fn check_features(what: &'static str, x: &[f32], n: usize, dim: usize) -> Result<()> {
    if n == 0 {
        return Err(invalid(format!("{what}: no examples (n = 0)")));
    }
    if dim == 0 {
        return Err(invalid(format!("{what}: no features (dim = 0)")));
    }
    let want = n
        .checked_mul(dim)
        .ok_or_else(|| invalid(format!("{what}: n * dim overflows")))?;
    if x.len() != want {
        return Err(mismatch(what, x.len(), want));
    }
    if let Some(k) = x.iter().position(|v| !v.is_finite()) {
        return Err(invalid(format!(
            "{what}: feature {} of example {} is NaN or infinite",
            k % dim,
            k / dim
        )));
    }
    Ok(())
}

/// Checks that there are `n` labels, each `< classes`.
pub(super) fn check_labels(
    what: &'static str,
    labels: &[u32],
    n: usize,
    classes: usize,
) -> Result<()> {
    if classes == 0 {
        return Err(invalid(format!("{what}: no classes (classes = 0)")));
    }
    if labels.len() != n {
        return Err(mismatch(what, labels.len(), n));
    }
    if let Some(i) = labels.iter().position(|&y| y as usize >= classes) {
        return Err(invalid(format!(
            "{what}: label {} of example {i} is out of range for {classes} classes",
            labels[i]
        )));
    }
    Ok(())
}

/// Checks the data of a logistic regression: `n x dim` finite features, `n` labels below
/// `classes`, and, when given, `classes * dim + classes` parameters.
pub(super) fn check_problem(
    x: &[f32],
    n: usize,
    dim: usize,
    labels: &[u32],
    classes: usize,
    theta_len: Option<usize>,
) -> Result<()> {
    check_features("probe features", x, n, dim)?;
    check_labels("probe labels", labels, n, classes)?;
    if let Some(len) = theta_len {
        let want = classes * dim + classes;
        if len != want {
            return Err(mismatch("probe parameters", len, want));
        }
    }
    Ok(())
}
