//! Packing: copying blocks of A and B into the contiguous micro-panels the microkernel streams.
//!
//! BLIS (Van Zee and van de Geijn, 2015) packs an `mc x kc` block of A into `mr`-row
//! micro-panels stored k-major (`panel[p * mr + i] = A[i, p]`) and a `kc x nc` block of B into
//! `nr`-column micro-panels (`panel[p * nr + j] = B[p, j]`), padding the last panel with
//! zeros. The traits here make packing pluggable: convolution packs B straight from an image
//! (implicit im2col) by implementing [`PackB`] instead of materializing a column matrix.
//! Packers write into a safe slice, so a custom packer cannot break memory safety.
//!
//! A packer receives several panels at once so it can walk its source in memory order: a
//! row-major B is read one contiguous row segment at a time and scattered into the panels,
//! instead of panel by panel down the rows (one page, and one TLB miss, per row).

use super::view::MatRef;

/// A source of the `m x k` left operand, packed into `mr`-row micro-panels.
pub trait PackA: Sync {
    /// Rows of op(A).
    fn rows(&self) -> usize;
    /// Columns of op(A) (the reduction length `k`).
    fn depth(&self) -> usize;
    /// Packs rows `i0 .. i0 + h` and columns `p0 .. p0 + kc` into `ceil(h / mr)` consecutive
    /// micro-panels of `kc * mr` floats (`out.len()` is exactly that):
    /// `out[q * kc * mr + p * mr + i] = A[i0 + q * mr + i, p0 + p]`, and zero for rows past
    /// `h` in the last panel.
    fn pack(&self, i0: usize, h: usize, p0: usize, kc: usize, mr: usize, out: &mut [f32]);
}

/// A source of the `k x n` right operand, packed into `nr`-column micro-panels.
pub trait PackB: Sync {
    /// Rows of op(B) (the reduction length `k`).
    fn depth(&self) -> usize;
    /// Columns of op(B).
    fn cols(&self) -> usize;
    /// Packs rows `p0 .. p0 + kc` and columns `j0 .. j0 + w` into `ceil(w / nr)` consecutive
    /// micro-panels of `kc * nr` floats (`out.len()` is exactly that):
    /// `out[q * kc * nr + p * nr + j] = B[p0 + p, j0 + q * nr + j]`, and zero for columns
    /// past `w` in the last panel.
    fn pack(&self, p0: usize, kc: usize, j0: usize, w: usize, nr: usize, out: &mut [f32]);
}

/// Zeroes the padding of the last panel: lanes `used .. width` of each of its `kc` rows.
fn zero_tail(last_panel: &mut [f32], width: usize, used: usize) {
    if used < width {
        for row in last_panel.chunks_exact_mut(width) {
            row[used..].fill(0.0);
        }
    }
}

/// `dst[..src.len()] = src` for a run of at most `width` floats: a fixed-size copy, which the
/// compiler inlines, for the full runs of the usual widths (a call to `memmove` for each
/// 48- or 128-byte run cost more than the copy).
#[inline(always)]
fn copy_run(width: usize, dst: &mut [f32], src: &[f32]) {
    #[inline(always)]
    fn fixed<const R: usize>(dst: &mut [f32], src: &[f32]) {
        let s: &[f32; R] = src.try_into().expect("a full run");
        let d: &mut [f32; R] = (&mut dst[..R]).try_into().expect("room for a run");
        *d = *s;
    }
    match (width, src.len() == width) {
        (6, true) => fixed::<6>(dst, src),
        (8, true) => fixed::<8>(dst, src),
        (12, true) => fixed::<12>(dst, src),
        (16, true) => fixed::<16>(dst, src),
        (32, true) => fixed::<32>(dst, src),
        _ => dst[..src.len()].copy_from_slice(src),
    }
}

/// Floats per cache line: the rows are interleaved one line-sized chunk at a time.
const LINE: usize = 16;

/// `dst[p * R + i] = rows[i][p]`: R equally long rows interleaved k-major.
///
/// Walked one cache line of each row at a time (all R rows over one `LINE`-float chunk of
/// `p`, then the next chunk), not one `p` across all rows: with a power-of-two row stride
/// the R rows map to the same L1 set, and reading them element by element in lockstep
/// evicted each line before its next element was read (R > the ways of the set).
#[inline]
fn interleave_rows<const R: usize>(rows: [&[f32]; R], dst: &mut [f32]) {
    let kc = dst.len() / R;
    // Bounds known up front let the compiler drop the per-element checks.
    let rows: [&[f32]; R] = std::array::from_fn(|i| &rows[i][..kc]);
    // Chunks start at a line boundary of row 0 (every row, when the stride is a multiple of
    // a line, the case this ordering is for), so each chunk reads one line per row.
    let head = (rows[0].as_ptr().align_offset(4 * LINE) % LINE).min(kc);
    let body = head + (kc - head) / LINE * LINE;
    let column = |p: usize, d: &mut [f32]| {
        for i in 0..R {
            d[i] = rows[i][p];
        }
    };
    for p in (0..head).chain(body..kc) {
        column(p, &mut dst[p * R..][..R]);
    }
    for p0 in (head..body).step_by(LINE) {
        let d = &mut dst[p0 * R..][..LINE * R];
        for (i, row) in rows.iter().enumerate() {
            let src: &[f32; LINE] = row[p0..p0 + LINE].try_into().expect("a chunk of a row");
            for (q, &v) in src.iter().enumerate() {
                d[q * R + i] = v;
            }
        }
    }
}

/// Packs rows `i0 .. i0 + h` (row stride `rs`, unit column stride) of `data`, columns
/// `p0 .. p0 + kc`, into `R`-row panels, writing each panel sequentially; the rows of a last
/// partial panel are scattered into it (its tail is zeroed by the caller).
fn pack_rows<const R: usize>(
    data: &[f32],
    rs: usize,
    i0: usize,
    h: usize,
    p0: usize,
    kc: usize,
    out: &mut [f32],
) {
    let panel = kc * R;
    let full = h / R;
    for q in 0..full {
        let r = i0 + q * R;
        let rows: [&[f32]; R] = std::array::from_fn(|i| &data[(r + i) * rs + p0..][..kc]);
        interleave_rows(rows, &mut out[q * panel..][..panel]);
    }
    for i in full * R..h {
        let dst = &mut out[full * panel..][..panel];
        let row = &data[(i0 + i) * rs + p0..][..kc];
        for (d, &v) in dst[i - full * R..].iter_mut().step_by(R).zip(row) {
            *d = v;
        }
    }
}

impl PackA for MatRef<'_> {
    fn rows(&self) -> usize {
        MatRef::rows(self)
    }
    fn depth(&self) -> usize {
        self.cols()
    }
    fn pack(&self, i0: usize, h: usize, p0: usize, kc: usize, mr: usize, out: &mut [f32]) {
        let panel = kc * mr;
        let out = &mut out[..h.div_ceil(mr) * panel];
        let (rs, cs) = (self.row_stride(), self.col_stride());
        let data = self.data();
        if rs == 1 {
            // Column-major A (or a transposed row-major one): each k-column is contiguous.
            for p in 0..kc {
                let col = &data[(p0 + p) * cs + i0..][..h];
                for (q, seg) in col.chunks(mr).enumerate() {
                    copy_run(mr, &mut out[q * panel + p * mr..], seg);
                }
            }
        } else if cs == 1 && mr == 6 {
            // Row-major A with the 6-row kernels: gather six rows per panel, writing each
            // panel sequentially.
            pack_rows::<6>(data, rs, i0, h, p0, kc, out);
        } else if cs == 1 && mr == 12 {
            // The same for the 12-row AVX-512 kernel.
            pack_rows::<12>(data, rs, i0, h, p0, kc, out);
        } else {
            // Row-major or strided A: walk each row, scatter into its panel k-major.
            for i in 0..h {
                let (q, ii) = (i / mr, i % mr);
                let dst = &mut out[q * panel..][..panel];
                let base = (i0 + i) * rs + p0 * cs;
                for (p, d) in dst[ii..].iter_mut().step_by(mr).enumerate() {
                    *d = data[base + p * cs];
                }
            }
        }
        let used = h - (h.div_ceil(mr) - 1) * mr;
        let last = out.len() - panel;
        zero_tail(&mut out[last..], mr, used);
    }
}

impl PackB for MatRef<'_> {
    fn depth(&self) -> usize {
        self.rows()
    }
    fn cols(&self) -> usize {
        MatRef::cols(self)
    }
    fn pack(&self, p0: usize, kc: usize, j0: usize, w: usize, nr: usize, out: &mut [f32]) {
        let panel = kc * nr;
        let out = &mut out[..w.div_ceil(nr) * panel];
        let (rs, cs) = (self.row_stride(), self.col_stride());
        let data = self.data();
        if cs == 1 {
            // Row-major B: read each row segment once, scatter `nr`-runs into the panels.
            for p in 0..kc {
                let row = &data[(p0 + p) * rs + j0..][..w];
                for (q, seg) in row.chunks(nr).enumerate() {
                    copy_run(nr, &mut out[q * panel + p * nr..], seg);
                }
            }
        } else {
            // Column-major or strided B: walk each column (contiguous when rs == 1).
            for j in 0..w {
                let (q, jj) = (j / nr, j % nr);
                let dst = &mut out[q * panel..][..panel];
                let base = p0 * rs + (j0 + j) * cs;
                if rs == 1 {
                    for (p, &v) in data[base..][..kc].iter().enumerate() {
                        dst[p * nr + jj] = v;
                    }
                } else {
                    for p in 0..kc {
                        dst[p * nr + jj] = data[base + p * rs];
                    }
                }
            }
        }
        let used = w - (w.div_ceil(nr) - 1) * nr;
        let last = out.len() - panel;
        zero_tail(&mut out[last..], nr, used);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 5 x 7 matrix with value 10*i + j, stored row-major, column-major and strided.
    fn views(store: &mut [Vec<f32>; 3]) -> [MatRef<'_>; 3] {
        store[0] = (0..35).map(|x| (10 * (x / 7) + x % 7) as f32).collect();
        store[1] = (0..35).map(|x| (10 * (x % 5) + x / 5) as f32).collect();
        store[2] = vec![-1.0f32; 5 * 21];
        for i in 0..5 {
            for j in 0..7 {
                store[2][i * 21 + j * 3] = (10 * i + j) as f32;
            }
        }
        let [a, b, c] = store;
        [
            MatRef::row_major(a, 5, 7).unwrap(),
            MatRef::col_major(b, 5, 7).unwrap(),
            MatRef::new(c, 5, 7, 21, 3).unwrap(),
        ]
    }

    #[test]
    fn packs_a_and_b_in_every_layout() {
        let mut store = [vec![], vec![], vec![]];
        for v in views(&mut store) {
            for (i0, h) in [(0usize, 5usize), (4, 1), (1, 3), (0, 4)] {
                let np = h.div_ceil(2);
                let mut out = vec![f32::NAN; np * 5 * 2];
                PackA::pack(&v, i0, h, 2, 5, 2, &mut out);
                for q in 0..np {
                    for p in 0..5 {
                        for i in 0..2 {
                            let r = q * 2 + i;
                            let want = if r < h {
                                (10 * (i0 + r) + 2 + p) as f32
                            } else {
                                0.0
                            };
                            assert_eq!(out[q * 10 + p * 2 + i], want);
                        }
                    }
                }
            }
            let bt = v.t(); // 7 x 5, bt[p, j] = 10 * j + p
            for (j0, w) in [(0usize, 5usize), (4, 1), (1, 3), (0, 3)] {
                let np = w.div_ceil(2);
                let mut out = vec![f32::NAN; np * 6 * 2];
                PackB::pack(&bt, 1, 6, j0, w, 2, &mut out);
                for q in 0..np {
                    for p in 0..6 {
                        for j in 0..2 {
                            let c = q * 2 + j;
                            let want = if c < w {
                                (10 * (j0 + c) + 1 + p) as f32
                            } else {
                                0.0
                            };
                            assert_eq!(out[q * 12 + p * 2 + j], want);
                        }
                    }
                }
            }
        }
    }
}
