//! Strided matrix views: the checked, safe front door of every GEMM.
//!
//! A view is a buffer plus `rows x cols` and a row and a column stride (in elements). Element
//! `(i, j)` lives at `i * row_stride + j * col_stride`. Constructors check that the last element
//! is inside the buffer (with overflow-checked arithmetic), so the kernels behind them never
//! read or write out of bounds. Transposition swaps the strides and costs nothing.

use crate::error::{Error, Result};

/// The number of elements a `rows x cols` view with these strides reaches, or `None` on
/// arithmetic overflow.
pub(crate) fn required_len(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1)
        .checked_mul(rs)?
        .checked_add((cols - 1).checked_mul(cs)?)?
        .checked_add(1)
}

fn check_bounds(
    what: &'static str,
    len: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
) -> Result<()> {
    match required_len(rows, cols, rs, cs) {
        Some(need) if need <= len => Ok(()),
        need => Err(Error::OutOfBounds {
            op: "matrix view",
            what,
            shape: [rows, cols].into(),
            row_stride: rs,
            col_stride: cs,
            needed: need.unwrap_or(usize::MAX),
            len,
        }),
    }
}

/// True when no two distinct `(i, j)` of the view share a memory location: the rows are laid
/// out one after another (row-major-like) or the columns are (column-major-like).
fn no_self_overlap(rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rows == 0 || cols == 0 || (rows == 1 && cols == 1) {
        return true;
    }
    if rows == 1 {
        return cs >= 1;
    }
    if cols == 1 {
        return rs >= 1;
    }
    let row_major = cs >= 1 && (cols - 1).checked_mul(cs).is_some_and(|span| rs > span);
    let col_major = rs >= 1 && (rows - 1).checked_mul(rs).is_some_and(|span| cs > span);
    row_major || col_major
}

/// An immutable strided view of an `f32` matrix.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatRef<'a> {
    /// A `rows x cols` view of `data` with element `(i, j)` at `i * row_stride + j * col_stride`.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] when the view reaches past `data` or its extent overflows.
    pub fn new(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self> {
        check_bounds("input", data.len(), rows, cols, row_stride, col_stride)?;
        Ok(Self {
            data,
            rows,
            cols,
            rs: row_stride,
            cs: col_stride,
        })
    }

    /// A dense row-major view (`row_stride = cols`, `col_stride = 1`).
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] when `data` is shorter than `rows * cols`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, cols, 1)
    }

    /// A dense column-major view (`row_stride = 1`, `col_stride = rows`).
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] when `data` is shorter than `rows * cols`.
    pub fn col_major(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, 1, rows)
    }

    /// The transpose, by swapping the strides.
    #[must_use]
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn row_stride(&self) -> usize {
        self.rs
    }
    pub fn col_stride(&self) -> usize {
        self.cs
    }
    /// The underlying buffer.
    pub fn data(&self) -> &'a [f32] {
        self.data
    }

    /// Element `(i, j)`.
    ///
    /// # Panics
    /// When `i >= rows` or `j >= cols`.
    #[track_caller]
    #[inline]
    pub fn get(&self, i: usize, j: usize) -> f32 {
        assert!(
            i < self.rows && j < self.cols,
            "index ({i}, {j}) out of range"
        );
        self.data[i * self.rs + j * self.cs]
    }
}

/// A mutable strided view of an `f32` matrix whose elements are pairwise distinct in memory.
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatMut<'a> {
    /// A `rows x cols` mutable view of `data` with element `(i, j)` at
    /// `i * row_stride + j * col_stride`.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] when the view reaches past `data`; [`Error::SelfOverlap`] when
    /// two elements would share a location (a view that is neither row- nor column-ordered).
    pub fn new(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self> {
        check_bounds("output", data.len(), rows, cols, row_stride, col_stride)?;
        if !no_self_overlap(rows, cols, row_stride, col_stride) {
            return Err(Error::SelfOverlap {
                op: "matrix view",
                shape: [rows, cols].into(),
                row_stride,
                col_stride,
            });
        }
        Ok(Self {
            data,
            rows,
            cols,
            rs: row_stride,
            cs: col_stride,
        })
    }

    /// A dense row-major view.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] when `data` is shorter than `rows * cols`.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, cols, 1)
    }

    /// A dense column-major view.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] when `data` is shorter than `rows * cols`.
    pub fn col_major(data: &'a mut [f32], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, 1, rows)
    }

    /// The transpose, by swapping the strides.
    #[must_use]
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Reborrows as an immutable view.
    pub fn as_ref(&self) -> MatRef<'_> {
        MatRef {
            data: self.data,
            rows: self.rows,
            cols: self.cols,
            rs: self.rs,
            cs: self.cs,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn row_stride(&self) -> usize {
        self.rs
    }
    pub fn col_stride(&self) -> usize {
        self.cs
    }

    /// The raw parts for the loop nest: pointer, rows, cols, strides.
    pub(crate) fn raw_parts(&mut self) -> (*mut f32, usize, usize, usize, usize) {
        (
            self.data.as_mut_ptr(),
            self.rows,
            self.cols,
            self.rs,
            self.cs,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        let v = vec![0.0f32; 12];
        assert!(MatRef::row_major(&v, 3, 4).is_ok());
        assert!(MatRef::row_major(&v, 4, 4).is_err());
        assert!(MatRef::new(&v, 2, 2, usize::MAX, 1).is_err());
        assert!(MatRef::new(&v, 0, 5, 1000, 1000).is_ok());
        assert!(MatRef::new(&v, 3, 2, 5, 2).is_err()); // last = 2*5 + 1*2 = 12 -> needs 13
        assert!(MatRef::new(&v, 3, 2, 4, 2).is_ok()); // last = 8 + 2 = 10
    }

    #[test]
    fn self_overlap_is_rejected() {
        let mut v = vec![0.0f32; 64];
        assert!(MatMut::new(&mut v, 3, 3, 1, 1).is_err());
        assert!(MatMut::new(&mut v, 3, 3, 0, 1).is_err());
        assert!(MatMut::new(&mut v, 3, 3, 3, 1).is_ok());
        assert!(MatMut::new(&mut v, 3, 3, 1, 3).is_ok());
        assert!(MatMut::new(&mut v, 3, 3, 2, 1).is_err());
        assert!(MatMut::new(&mut v, 1, 5, 0, 1).is_ok());
        assert!(MatMut::new(&mut v, 5, 1, 1, 0).is_ok());
        assert!(MatMut::new(&mut v, 5, 1, 0, 0).is_err());
    }
}
