//! Packing: copying blocks of A and B into the contiguous micro-panels the microkernel streams.
//!
//! BLIS (Van Zee and van de Geijn, 2015) packs an `mc x kc` block of A into `mr`-row
//! micro-panels stored k-major (`out[p * mr + i] = A[i, p]`) and a `kc x nc` block of B into
//! `nr`-column micro-panels (`out[p * nr + j] = B[p, j]`), padding the last panel with zeros.
//! The traits here make packing pluggable: convolution packs B straight from an image
//! (implicit im2col) by implementing [`PackB`] instead of materializing a column matrix.
//! Packers write into a safe slice, so a custom packer cannot break memory safety.

use super::view::MatRef;

/// A source of the `m x k` left operand, packed one micro-panel at a time.
pub trait PackA: Sync {
    /// Rows of op(A).
    fn rows(&self) -> usize;
    /// Columns of op(A) (the reduction length `k`).
    fn depth(&self) -> usize;
    /// Packs rows `i0 .. i0 + h` (`h <= mr`) and columns `p0 .. p0 + kc` into `out`
    /// (`out.len() == kc * mr`) as `out[p * mr + i] = A[i0 + i, p0 + p]`; rows `h .. mr` of
    /// the panel must be written as zeros.
    fn pack_panel(&self, i0: usize, h: usize, p0: usize, kc: usize, mr: usize, out: &mut [f32]);
}

/// A source of the `k x n` right operand, packed one micro-panel at a time.
pub trait PackB: Sync {
    /// Rows of op(B) (the reduction length `k`).
    fn depth(&self) -> usize;
    /// Columns of op(B).
    fn cols(&self) -> usize;
    /// Packs rows `p0 .. p0 + kc` and columns `j0 .. j0 + w` (`w <= nr`) into `out`
    /// (`out.len() == kc * nr`) as `out[p * nr + j] = B[p0 + p, j0 + j]`; columns `w .. nr`
    /// of the panel must be written as zeros.
    fn pack_panel(&self, p0: usize, kc: usize, j0: usize, w: usize, nr: usize, out: &mut [f32]);
}

impl PackA for MatRef<'_> {
    fn rows(&self) -> usize {
        MatRef::rows(self)
    }
    fn depth(&self) -> usize {
        self.cols()
    }
    fn pack_panel(&self, i0: usize, h: usize, p0: usize, kc: usize, mr: usize, out: &mut [f32]) {
        let out = &mut out[..kc * mr];
        let (rs, cs) = (self.row_stride(), self.col_stride());
        let data = self.data();
        if h < mr {
            out.fill(0.0);
        }
        if cs == 1 && h == mr {
            // Row-major A: walk each row contiguously, scatter into the k-major panel.
            for i in 0..h {
                let row = &data[(i0 + i) * rs + p0..][..kc];
                for (p, &v) in row.iter().enumerate() {
                    out[p * mr + i] = v;
                }
            }
        } else if rs == 1 {
            // Column-major A (or a transposed row-major one): each k-column is contiguous.
            for (p, dst) in out.chunks_exact_mut(mr).enumerate() {
                let col = &data[(p0 + p) * cs + i0..][..h];
                dst[..h].copy_from_slice(col);
            }
        } else {
            for i in 0..h {
                let base = (i0 + i) * rs + p0 * cs;
                for p in 0..kc {
                    out[p * mr + i] = data[base + p * cs];
                }
            }
        }
    }
}

impl PackB for MatRef<'_> {
    fn depth(&self) -> usize {
        self.rows()
    }
    fn cols(&self) -> usize {
        MatRef::cols(self)
    }
    fn pack_panel(&self, p0: usize, kc: usize, j0: usize, w: usize, nr: usize, out: &mut [f32]) {
        let out = &mut out[..kc * nr];
        let (rs, cs) = (self.row_stride(), self.col_stride());
        let data = self.data();
        if cs == 1 {
            // Row-major B: every k-row of the panel is a contiguous run of `w` floats.
            for (p, dst) in out.chunks_exact_mut(nr).enumerate() {
                let src = &data[(p0 + p) * rs + j0..][..w];
                dst[..w].copy_from_slice(src);
                dst[w..].fill(0.0);
            }
        } else {
            if w < nr {
                out.fill(0.0);
            }
            if rs == 1 {
                // Column-major B: each column is contiguous along k.
                for j in 0..w {
                    let col = &data[(j0 + j) * cs + p0..][..kc];
                    for (p, &v) in col.iter().enumerate() {
                        out[p * nr + j] = v;
                    }
                }
            } else {
                for (p, dst) in out.chunks_exact_mut(nr).enumerate() {
                    let base = (p0 + p) * rs + j0 * cs;
                    for (j, d) in dst[..w].iter_mut().enumerate() {
                        *d = data[base + j * cs];
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_a_in_every_layout() {
        // 5 x 7 matrix, value 10*i + j.
        let rm: Vec<f32> = (0..35).map(|x| (10 * (x / 7) + x % 7) as f32).collect();
        let cm: Vec<f32> = (0..35).map(|x| (10 * (x % 5) + x / 5) as f32).collect();
        let mut strided = vec![-1.0f32; 5 * 2 * 7 * 3];
        for i in 0..5 {
            for j in 0..7 {
                strided[i * 21 + j * 3] = (10 * i + j) as f32;
            }
        }
        let views = [
            MatRef::row_major(&rm, 5, 7).unwrap(),
            MatRef::col_major(&cm, 5, 7).unwrap(),
            MatRef::new(&strided, 5, 7, 21, 3).unwrap(),
        ];
        for v in views {
            for (i0, h) in [(0usize, 4usize), (4, 1), (1, 3)] {
                let mut out = vec![f32::NAN; 4 * 5];
                PackA::pack_panel(&v, i0, h, 2, 5, 4, &mut out);
                for p in 0..5 {
                    for i in 0..4 {
                        let want = if i < h {
                            (10 * (i0 + i) + 2 + p) as f32
                        } else {
                            0.0
                        };
                        assert_eq!(out[p * 4 + i], want);
                    }
                }
            }
            let bt = v.t();
            for (j0, w) in [(0usize, 4usize), (4, 1), (1, 3)] {
                let mut out = vec![f32::NAN; 6 * 4];
                PackB::pack_panel(&bt, 1, 6, j0, w, 4, &mut out);
                for p in 0..6 {
                    for j in 0..4 {
                        let want = if j < w {
                            (10 * (j0 + j) + 1 + p) as f32
                        } else {
                            0.0
                        };
                        assert_eq!(out[p * 4 + j], want);
                    }
                }
            }
        }
    }
}
