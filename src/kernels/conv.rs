//! 2-D convolution (NCHW, any kernel size, stride and padding; dilation 1, groups 1), never
//! through a materialized column matrix.
//!
//! - AVX2 (the `direct` module): the forward pass and the weight gradient run a direct
//!   convolution on the gather microkernel: a zero-padded copy of a group of images, then 6x16
//!   register tiles whose six A values per step are broadcast straight from the padded image
//!   at `pixel position + tap offset` (pixels x taps for the forward pass, taps x pixels for
//!   the weight gradient, summed over groups of images in a fixed order).
//! - Portable: GEMM with implicit im2col (Chellapilla et al. 2006 for the lowering): the
//!   GEMM's packers read panels straight from the image. Forward per group of small images
//!   `Y = W * col(X)` (bias and ReLU in the epilogue); weight gradient one GEMM
//!   `dW^T = col(X) * dY^T` over every pixel of the batch, so the sum over images is never
//!   split across threads.
//! - Input gradient: for stride 1 a forward convolution of `dY` with the flipped, transposed
//!   kernel (padding `K - 1 - p`); for larger strides `dcol = W^T * dY` per group of images
//!   into a per-thread scratch, then col2im accumulation into `dX`.
//! - 1x1, stride 1, no padding: the image itself is the GEMM operand.

use crate::error::{check_len, Error, Result};
use crate::kernels::gemm::{gemm, gemm_packed, Fused, GemmParams, MatMut, MatRef, PackA, PackB};
use rayon::prelude::*;
use std::cell::RefCell;

/// The geometry of one convolution: input `N x Cin x H x W`, weights `Cout x Cin x Kh x Kw`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub pad: (usize, usize),
}

impl Conv2d {
    /// A square-kernel convolution with equal stride and padding in both directions.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        n: usize,
        c_in: usize,
        h: usize,
        w: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Self {
        Self {
            n,
            c_in,
            h,
            w,
            c_out,
            kh: k,
            kw: k,
            stride: (stride, stride),
            pad: (pad, pad),
        }
    }
    /// Output height `(H + 2 ph - Kh) / sh + 1`.
    pub fn out_h(&self) -> usize {
        (self.h + 2 * self.pad.0 - self.kh) / self.stride.0 + 1
    }
    /// Output width `(W + 2 pw - Kw) / sw + 1`.
    pub fn out_w(&self) -> usize {
        (self.w + 2 * self.pad.1 - self.kw) / self.stride.1 + 1
    }
    /// Elements of the input tensor.
    pub fn x_len(&self) -> usize {
        self.n * self.c_in * self.h * self.w
    }
    /// Elements of the weight tensor.
    pub fn w_len(&self) -> usize {
        self.c_out * self.c_in * self.kh * self.kw
    }
    /// Elements of the output tensor.
    pub fn y_len(&self) -> usize {
        self.n * self.c_out * self.out_h() * self.out_w()
    }
    /// The GEMM depth `Cin * Kh * Kw`.
    fn depth(&self) -> usize {
        self.c_in * self.kh * self.kw
    }

    /// Checks the geometry: positive sizes and strides, a kernel that fits the padded input,
    /// and no size overflow.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming what is wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidArgument { op: "conv2d", msg });
        if self.c_in == 0 || self.c_out == 0 || self.kh == 0 || self.kw == 0 {
            return bad(format!(
                "channels and kernel size must be positive: {self:?}"
            ));
        }
        if self.stride.0 == 0 || self.stride.1 == 0 {
            return bad(format!("stride must be positive: {:?}", self.stride));
        }
        let ph = self.h.checked_add(self.pad.0.saturating_mul(2));
        let pw = self.w.checked_add(self.pad.1.saturating_mul(2));
        match (ph, pw) {
            (Some(ph), Some(pw)) if ph >= self.kh && pw >= self.kw => {}
            _ => {
                return bad(format!(
                    "kernel {}x{} does not fit the padded input {}x{} (padding {:?})",
                    self.kh, self.kw, self.h, self.w, self.pad
                ))
            }
        }
        let sizes = [
            [self.n, self.c_in, self.h, self.w],
            [self.c_out, self.c_in, self.kh, self.kw],
            [self.n, self.c_out, self.out_h(), self.out_w()],
        ];
        if sizes.iter().any(|s| {
            s.iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .is_none()
        }) {
            return bad(format!("tensor sizes overflow: {self:?}"));
        }
        Ok(())
    }

    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == (1, 1) && self.pad == (0, 0)
    }
}

/// `col(X[n])` of one image, read a row segment at a time by the packers below.
struct Im2col<'a> {
    x: &'a [f32],
    g: Conv2d,
    wo: usize,
}

/// Columns packed per step through a stack buffer.
const SEG: usize = 512;

impl Im2col<'_> {
    /// Writes `col[p, j0 .. j0 + dst.len()]` (row p of the column matrix) into `dst`: for
    /// each output row, zeros where the kernel tap falls in the padding and a copy (stride 1)
    /// or a gather (larger strides) of the input row in between.
    #[inline]
    fn row_segment(&self, p: usize, j0: usize, dst: &mut [f32]) {
        let g = &self.g;
        let (ci, r) = (p / (g.kh * g.kw), p % (g.kh * g.kw));
        let (ky, kx) = (r / g.kw, r % g.kw);
        let plane = &self.x[ci * g.h * g.w..][..g.h * g.w];
        let (sh, sw) = g.stride;
        let pw = g.pad.1;
        // Output columns whose tap is inside the row: ox in [lo, hi).
        let lo = if pw > kx { (pw - kx).div_ceil(sw) } else { 0 };
        let hi = if g.w + pw > kx {
            ((g.w - 1 + pw - kx) / sw + 1).min(self.wo)
        } else {
            0
        };
        // One division for the start; then whole output rows, counted incrementally.
        let (mut oy, mut ox0) = (j0 / self.wo, j0 % self.wo);
        let mut out = 0;
        while out < dst.len() {
            let run = (self.wo - ox0).min(dst.len() - out);
            let seg = &mut dst[out..out + run];
            let iy = (oy * sh + ky) as isize - g.pad.0 as isize;
            if iy < 0 || iy >= g.h as isize || lo >= hi {
                seg.fill(0.0);
            } else {
                let row = &plane[iy as usize * g.w..][..g.w];
                let a = lo.clamp(ox0, ox0 + run);
                let b = hi.clamp(a, ox0 + run);
                seg[..a - ox0].fill(0.0);
                seg[b - ox0..].fill(0.0);
                // a < b means at least one tap inside the row, so a >= lo and the first
                // input column below is not negative.
                if a < b {
                    let mid = &mut seg[a - ox0..b - ox0];
                    let first = a * sw + kx - pw;
                    if sw == 1 {
                        mid.copy_from_slice(&row[first..first + mid.len()]);
                    } else {
                        for (d, &v) in mid.iter_mut().zip(row[first..].iter().step_by(sw)) {
                            *d = v;
                        }
                    }
                }
            }
            out += run;
            ox0 = 0;
            oy += 1;
        }
    }
}

/// `Y = conv(X, W) (+ bias) (ReLU)`. `x` is `N x Cin x H x W`, `w` is `Cout x Cin x Kh x Kw`,
/// `bias` has `Cout` entries, `y` is `N x Cout x Ho x Wo` and is overwritten.
///
/// # Errors
/// An invalid geometry or a slice of the wrong length.
pub fn conv2d_forward(
    g: &Conv2d,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
    y: &mut [f32],
) -> Result<()> {
    g.validate()?;
    check_len("conv2d input", x.len(), g.x_len())?;
    check_len("conv2d weight", w.len(), g.w_len())?;
    check_len("conv2d output", y.len(), g.y_len())?;
    if let Some(b) = bias {
        check_len("conv2d bias", b.len(), g.c_out)?;
    }
    if g.n == 0 {
        return Ok(());
    }
    let (ho, wo) = (g.out_h(), g.out_w());
    let (xs, ys) = (g.c_in * g.h * g.w, g.c_out * ho * wo);
    let wm = MatRef::row_major(w, g.c_out, g.depth())?;
    let epi = Fused {
        row_bias: bias,
        relu,
        ..Fused::default()
    };
    #[cfg(target_arch = "x86_64")]
    if !g.is_pointwise() {
        match crate::kernels::isa() {
            crate::kernels::Isa::Avx512 if !direct::narrow(g.c_out) => {
                return direct::forward::<direct::Avx512Tile>(g, x, w, bias, relu, y)
            }
            crate::kernels::Isa::Avx512 | crate::kernels::Isa::Avx2Fma => {
                return direct::forward::<direct::Avx2Tile>(g, x, w, bias, relu, y)
            }
            crate::kernels::Isa::Portable => {}
        }
    }
    // Small images are grouped so each GEMM has about GROUP_COLS columns: the weights are
    // packed once per group instead of once per image. A group's output goes through a
    // per-thread scratch (Cout x group*HoWo) and is copied into place.
    let hw = ho * wo;
    let group = (GROUP_COLS / hw).clamp(1, g.n);
    let parallel_groups = g.n > group;
    let one = |(xg, yg): (&[f32], &mut [f32])| -> Result<()> {
        let gn = xg.len() / xs;
        let mut params = GemmParams::new().epilogue(&epi);
        if parallel_groups {
            params = params.sequential();
        }
        if gn == 1 {
            let c = MatMut::row_major(yg, g.c_out, hw)?;
            return if g.is_pointwise() {
                gemm(&params, wm, MatRef::row_major(xg, g.c_in, g.h * g.w)?, c)
            } else {
                gemm_packed(
                    &params,
                    &wm,
                    &GroupIm2col {
                        x: xg,
                        g: *g,
                        ho,
                        wo,
                        images: 1,
                    },
                    c,
                )
            };
        }
        with_scratch(&OUT, g.c_out * gn * hw, |scratch| {
            let b = GroupIm2col {
                x: xg,
                g: *g,
                ho,
                wo,
                images: gn,
            };
            gemm_packed(
                &params,
                &wm,
                &b,
                MatMut::row_major(scratch, g.c_out, gn * hw)?,
            )?;
            for (img, yi) in yg.chunks_exact_mut(ys).enumerate() {
                for (co, dst) in yi.chunks_exact_mut(hw).enumerate() {
                    dst.copy_from_slice(&scratch[co * gn * hw + img * hw..][..hw]);
                }
            }
            Ok(())
        })
    };
    for_each_group(x, xs * group, y, ys * group, one)
}

/// Runs `f` on the matching groups of `a` (chunks of `a_group`) and `b` (chunks of
/// `b_group`): in parallel when there is more than one group, else once on the calling thread
/// (where `f`'s GEMMs may use the pool themselves).
fn for_each_group<A: Sync, B: Send>(
    a: &[A],
    a_group: usize,
    b: &mut [B],
    b_group: usize,
    f: impl Fn((&[A], &mut [B])) -> Result<()> + Sync + Send,
) -> Result<()> {
    if a.len() > a_group {
        a.par_chunks(a_group)
            .zip(b.par_chunks_mut(b_group))
            .try_for_each(f)
    } else {
        f((a, b))
    }
}

/// Direct convolution on a gather microkernel (AVX2 6x16 or AVX-512 8x32): no column
/// matrix at all.
///
/// The input of a group of images is copied once into a zero-padded scratch; each R-pixel x
/// L-channel output tile is then `sum_p x_padded[base_i + offs[p]] * W^T[p, co]` over every
/// kernel tap `p = (ci, ky, kx)` (`offs[p] = (ci * Hp + ky) * Wp + kx`, `base_i` the padded
/// position of pixel i), the R input values broadcast straight from the padded image. The
/// weights are packed once per call into L-channel panels. The whole depth runs in one pass
/// per tile, so every output is the same sequence of fused multiply-adds whatever the threads.
#[cfg(target_arch = "x86_64")]
mod direct {
    use super::{for_each_group, with_scratch, Conv2d};
    use crate::error::Result;
    use crate::kernels::gemm::avx2::gather_tile_6x16;
    use crate::kernels::gemm::avx512::gather_tile_8x32;
    use rayon::prelude::*;
    use std::cell::RefCell;

    /// The most rows, lanes and the largest tile of any [`Tile`].
    const MAX_R: usize = 8;
    const MAX_L: usize = 32;
    const MAX_TILE: usize = 256;
    /// Tiles of pixels the forward pass stages before writing them out per channel.
    const BLOCK_TILES: usize = 8;

    /// A gather microkernel: `R` rows (output pixels, or taps in the weight gradient), each
    /// its own base pointer, by `L` lanes (the channels of one weight or gradient panel).
    pub(super) trait Tile {
        const R: usize;
        const L: usize;
        /// `out[L i + j] = sum_p bases[i][offs[p]] * b[L p + j]` for `i < R`, `j < L`.
        ///
        /// # Safety
        /// The CPU features of the kernel must be present; `bases.len() == R`,
        /// `out.len() == R * L`; `offs` valid for `k` reads, `bases[i].add(o)` valid for
        /// reading for every `i` and every `o` in `offs[..k]`, `b` valid for `k * L` reads.
        unsafe fn run(
            k: usize,
            offs: *const usize,
            bases: &[*const f32],
            b: *const f32,
            out: &mut [f32],
        );
    }

    /// A [`Tile`] named `$name` of `$r` rows by `$l` lanes on the kernel `$kernel`, which
    /// takes `&[*const f32; $r]` bases and a `&mut [f32; $r * $l]` tile.
    macro_rules! tile {
        ($(#[$doc:meta])* $name:ident, $r:literal, $l:literal, $kernel:ident) => {
            $(#[$doc])*
            pub(super) struct $name;

            impl Tile for $name {
                const R: usize = $r;
                const L: usize = $l;
                unsafe fn run(
                    k: usize,
                    offs: *const usize,
                    bases: &[*const f32],
                    b: *const f32,
                    out: &mut [f32],
                ) {
                    let bases: &[*const f32; $r] = bases.try_into().expect("R bases");
                    let out: &mut [f32; $r * $l] = out.try_into().expect("an R x L tile");
                    // SAFETY: forwarded from the caller (the kernel's CPU features are
                    // present, every read is in bounds).
                    unsafe { $kernel(k, offs, bases, b, out) }
                }
            }
        };
    }

    tile!(
        /// The AVX2+FMA 6x16 tile.
        Avx2Tile, 6, 16, gather_tile_6x16
    );
    tile!(
        /// The AVX-512 8x32 tile.
        Avx512Tile, 8, 32, gather_tile_8x32
    );

    /// Whether `c_out` output channels are too few for the AVX-512 tile: at most 16 fill
    /// half of its 32 lanes or less, and the AVX2 tile's 16 lanes run them faster on an
    /// AVX-512 machine too (measured 2026-12-03, Xeon, 2 threads: the default run's
    /// 8/16/32-channel ResNet trained 744 images/s on the AVX2 tiles, 574-596 on the
    /// AVX-512 ones). The choice depends on the shape only.
    pub(super) fn narrow(c_out: usize) -> bool {
        c_out <= Avx2Tile::L
    }

    thread_local! {
        static FWD_PIXELS: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
        static PADDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
        static WPANELS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
        static OFFSETS: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    }

    /// `offs[p]`: the offset of kernel tap `p = (ci, ky, kx)` from a pixel's position in the
    /// zero-padded input, `(ci * Hp + ky) * Wp + kx`.
    fn tap_offsets(g: &Conv2d, offs: &mut [usize]) {
        let (hp, wp) = (g.h + 2 * g.pad.0, g.w + 2 * g.pad.1);
        let taps = (0..g.c_in).flat_map(|ci| {
            (0..g.kh).flat_map(move |ky| (0..g.kw).map(move |kx| (ci * hp + ky) * wp + kx))
        });
        for (o, t) in offs.iter_mut().zip(taps) {
            *o = t;
        }
    }

    /// `pos[j]`: the position in the zero-padded input of a group of the top-left tap of
    /// output pixel `j` (images one after another).
    fn pixel_positions(g: &Conv2d, pos: &mut [usize]) {
        let (ho, wo) = (g.out_h(), g.out_w());
        let (hp, wp) = (g.h + 2 * g.pad.0, g.w + 2 * g.pad.1);
        let ps = g.c_in * hp * wp;
        let all = (0..).flat_map(|img| {
            (0..ho).flat_map(move |oy| {
                (0..wo).map(move |ox| img * ps + oy * g.stride.0 * wp + ox * g.stride.1)
            })
        });
        for (p, v) in pos.iter_mut().zip(all) {
            *p = v;
        }
    }

    /// Bytes of padded input per group: the group stays in L2 while every channel panel of
    /// the weights passes over it.
    const GROUP_BYTES: usize = 256 * 1024;
    /// The fewest groups (tasks) a batch is cut into when it has that many images, in the
    /// forward pass and, as chunks, in the weight gradient.
    const MIN_GROUPS: usize = 16;

    pub(super) fn forward<T: Tile>(
        g: &Conv2d,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        relu: bool,
        y: &mut [f32],
    ) -> Result<()> {
        let (ho, wo) = (g.out_h(), g.out_w());
        let (hp, wp) = (g.h + 2 * g.pad.0, g.w + 2 * g.pad.1);
        let depth = g.depth();
        let (xs, ys, ps) = (g.c_in * g.h * g.w, g.c_out * ho * wo, g.c_in * hp * wp);
        let l = T::L;
        let panels = g.c_out.div_ceil(l);
        // At most GROUP_BYTES per group, and at least MIN_GROUPS groups: a batch of small
        // images (a sentence is 1 x L) would otherwise fit in two or three groups, which
        // two threads split unevenly. Every output is the same sums whatever the grouping.
        let group = (GROUP_BYTES / (4 * ps))
            .min(g.n.div_ceil(MIN_GROUPS))
            .clamp(1, g.n);
        // Weights as W^T in L-channel panels: wp[q][p * L + j] = W[L q + j, p].
        with_scratch(&WPANELS, panels * depth * l, |wpan| {
            for (q, panel) in wpan.chunks_exact_mut(depth * l).enumerate() {
                for (p, row) in panel.chunks_exact_mut(l).enumerate() {
                    for (j, v) in row.iter_mut().enumerate() {
                        let co = l * q + j;
                        *v = if co < g.c_out { w[co * depth + p] } else { 0.0 };
                    }
                }
            }
            let wpan: &[f32] = wpan;
            with_scratch(&OFFSETS, depth, |offs| {
                tap_offsets(g, offs);
                let offs: &[usize] = offs;
                let one = |(xg, yg): (&[f32], &mut [f32])| {
                    group_forward::<T>(g, xg, yg, wpan, offs, bias, relu);
                    Ok(())
                };
                for_each_group(x, xs * group, y, ys * group, one)
            })
        })
    }

    /// Padded input and transposed output gradient per group of the weight gradient.
    const WGRAD_GROUP_BYTES: usize = 1024 * 1024;
    /// The most chunks (tasks, each with its own partial sum) of the weight gradient.
    const WGRAD_CHUNKS: usize = 16;

    thread_local! {
        static DYT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
        static PIXELS: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
        static TILES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }

    /// Copies images `xg` into `xp` with their zero border (`Cin` planes of `hp x wp` each).
    fn pad_into(g: &Conv2d, xg: &[f32], xp: &mut [f32]) {
        let (hp, wp) = (g.h + 2 * g.pad.0, g.w + 2 * g.pad.1);
        let (xs, ps) = (g.c_in * g.h * g.w, g.c_in * hp * wp);
        xp.chunks_exact_mut(ps)
            .zip(xg.chunks_exact(xs))
            .for_each(|(dst, src)| {
                dst.fill(0.0);
                for ci in 0..g.c_in {
                    for r in 0..g.h {
                        let at = (ci * hp + r + g.pad.0) * wp + g.pad.1;
                        dst[at..at + g.w].copy_from_slice(&src[(ci * g.h + r) * g.w..][..g.w]);
                    }
                }
            });
    }

    /// The per-image sizes of a geometry the weight gradient works with.
    #[derive(Clone, Copy)]
    struct Sizes {
        /// Output pixels.
        hw: usize,
        /// Taps, `Cin * Kh * Kw`.
        depth: usize,
        /// Input, output and zero-padded input floats.
        xs: usize,
        ys: usize,
        ps: usize,
    }

    impl Sizes {
        fn of(g: &Conv2d) -> Self {
            let hw = g.out_h() * g.out_w();
            let (hp, wp) = (g.h + 2 * g.pad.0, g.w + 2 * g.pad.1);
            Self {
                hw,
                depth: g.depth(),
                xs: g.c_in * g.h * g.w,
                ys: g.c_out * hw,
                ps: g.c_in * hp * wp,
            }
        }
    }

    /// `dW (+)= sum over the batch of x_padded[pixel + tap] * dY[co, pixel]`, as R-tap x
    /// L-channel tiles of `dW^T` on the gather microkernel: the rows are taps (their
    /// offsets the kernel's R bases), the steps are the pixels of a group of images (their
    /// padded positions the offset table) and `dY^T` is the L-channel panel.
    ///
    /// The batch is cut into at most [`WGRAD_CHUNKS`] chunks of whole groups, a number that
    /// depends on the shapes only. Each chunk is one task: group after group it pads the
    /// images, transposes their `dY` and runs every tile over them while they sit in its
    /// core's cache, adding each group's sum to the chunk's own partial `dW^T`. The
    /// partials are then added in chunk order. Every sum therefore runs in the same order
    /// whatever the number of threads, and a step costs one fork-join instead of three
    /// per group (measured 2026-12-03 on 2 cores: the per-group version sped up only
    /// 1.1-1.3x from 1 to 2 threads).
    pub(super) fn weight_grad<T: Tile>(
        g: &Conv2d,
        x: &[f32],
        dy: &[f32],
        dw: &mut [f32],
        accumulate: bool,
    ) {
        let sizes = Sizes::of(g);
        let Sizes {
            hw,
            depth,
            xs,
            ys,
            ps,
        } = sizes;
        let (r, l) = (T::R, T::L);
        let panels = g.c_out.div_ceil(l);
        let tiles = depth.div_ceil(r) * panels;
        let acc_len = tiles * r * l;
        let per_image = 4 * (ps + panels * l * hw);
        // As many chunks as WGRAD_CHUNKS allows when the batch has the images (a group per
        // chunk for small images, which would otherwise make two or three chunks that two
        // threads split unevenly); from the shapes only, so the sums keep their order.
        let group = (WGRAD_GROUP_BYTES / per_image)
            .min(g.n.div_ceil(WGRAD_CHUNKS))
            .clamp(1, g.n);
        let groups = g.n.div_ceil(group);
        let chunks = groups.min(WGRAD_CHUNKS);
        with_scratch(&OFFSETS, depth, |offs| {
            tap_offsets(g, offs);
            let offs: &[usize] = offs;
            with_scratch(&TILES, chunks * acc_len, |partials| {
                let chunk = |(c, acc): (usize, &mut [f32])| {
                    acc.fill(0.0);
                    for gi in groups * c / chunks..groups * (c + 1) / chunks {
                        let (i0, i1) = (gi * group, g.n.min((gi + 1) * group));
                        group_weight_grad::<T>(
                            g,
                            &sizes,
                            &x[i0 * xs..i1 * xs],
                            &dy[i0 * ys..i1 * ys],
                            offs,
                            acc,
                            chunks == 1,
                        );
                    }
                };
                if chunks > 1 {
                    partials.par_chunks_mut(acc_len).enumerate().for_each(chunk);
                } else {
                    chunk((0, partials));
                }
                let (acc, rest) = partials.split_at_mut(acc_len);
                for part in rest.chunks_exact(acc_len) {
                    for (a, &v) in acc.iter_mut().zip(part) {
                        *a += v;
                    }
                }
                // Scatter the tiles of dW^T into dW (Cout x Cin*Kh*Kw).
                for (task, tile) in acc.chunks_exact(r * l).enumerate() {
                    let (t, q) = (task / panels, task % panels);
                    for i in 0..r {
                        let p = r * t + i;
                        if p >= depth {
                            break;
                        }
                        for j in 0..l {
                            let co = l * q + j;
                            if co >= g.c_out {
                                break;
                            }
                            let d = &mut dw[co * depth + p];
                            *d = if accumulate {
                                *d + tile[i * l + j]
                            } else {
                                tile[i * l + j]
                            };
                        }
                    }
                }
            });
        });
    }

    /// One group of images of the weight gradient (the sizes those of `g`): pads `xg`,
    /// transposes `dyg` into L-channel panels and adds every tile's sum over the group's
    /// pixels to its tile of `acc` (`tiles x R x L`, tap tile major). With `parallel`, the
    /// tiles run on the pool (a batch of a single chunk); otherwise all on this thread.
    fn group_weight_grad<T: Tile>(
        g: &Conv2d,
        &Sizes {
            hw,
            depth,
            xs,
            ys,
            ps,
        }: &Sizes,
        xg: &[f32],
        dyg: &[f32],
        offs: &[usize],
        acc: &mut [f32],
        parallel: bool,
    ) {
        let (r, l) = (T::R, T::L);
        let panels = g.c_out.div_ceil(l);
        let gn = xg.len() / xs;
        let npix = gn * hw;
        with_scratch(&PADDED, gn * ps, |xp| {
            pad_into(g, xg, xp);
            let xp: &[f32] = xp;
            with_scratch(&DYT, panels * npix * l, |dyt| {
                // dY^T panels: dyt[q][s * L + j] = dY[img(s), L q + j, pix(s)], one plane
                // of dY after another.
                for (task, part) in dyt.chunks_exact_mut(hw * l).enumerate() {
                    let (q, img) = (task / gn, task % gn);
                    for j in 0..l {
                        let co = l * q + j;
                        let dst = part[j..].iter_mut().step_by(l);
                        if co < g.c_out {
                            let src = &dyg[img * ys + co * hw..][..hw];
                            for (v, &s) in dst.zip(src) {
                                *v = s;
                            }
                        } else {
                            for v in dst {
                                *v = 0.0;
                            }
                        }
                    }
                }
                let dyt: &[f32] = dyt;
                with_scratch(&PIXELS, npix, |pix| {
                    pixel_positions(g, pix);
                    let pix: &[usize] = pix;
                    // The largest element read: the last tap at the last pixel.
                    let last = pix[npix - 1] + offs[depth - 1];
                    assert!(last < xp.len(), "direct conv: padded input too short");
                    let tile = |(task, tile_acc): (usize, &mut [f32])| {
                        let (t, q) = (task / panels, task % panels);
                        // Taps past the last one repeat it (in bounds), never stored.
                        let mut bases = [std::ptr::null(); MAX_R];
                        for (i, b) in bases[..r].iter_mut().enumerate() {
                            *b = xp[offs[(r * t + i).min(depth - 1)]..].as_ptr();
                        }
                        let mut out = [0.0f32; MAX_TILE];
                        // SAFETY: the caller checked the tile's CPU features; `pix` has npix
                        // entries; every base + pixel offset is at most `last` (both grow
                        // monotonically), which is inside `xp`; the dY^T panel holds
                        // npix * L floats.
                        unsafe {
                            T::run(
                                npix,
                                pix.as_ptr(),
                                &bases[..r],
                                dyt[q * npix * l..].as_ptr(),
                                &mut out[..r * l],
                            )
                        };
                        for (a, &v) in tile_acc.iter_mut().zip(&out) {
                            *a += v;
                        }
                    };
                    if parallel {
                        acc.par_chunks_mut(r * l).enumerate().for_each(tile);
                    } else {
                        acc.chunks_exact_mut(r * l).enumerate().for_each(tile);
                    }
                });
            });
        });
    }

    /// One group of images: pad, then every (channel panel, pixel tile).
    fn group_forward<T: Tile>(
        g: &Conv2d,
        xg: &[f32],
        yg: &mut [f32],
        wpan: &[f32],
        offs: &[usize],
        bias: Option<&[f32]>,
        relu: bool,
    ) {
        let (ho, wo) = (g.out_h(), g.out_w());
        let hw = ho * wo;
        let (hp, wp) = (g.h + 2 * g.pad.0, g.w + 2 * g.pad.1);
        let depth = g.depth();
        let (xs, ps) = (g.c_in * g.h * g.w, g.c_in * hp * wp);
        let gn = xg.len() / xs;
        let npix = gn * hw;
        with_scratch(&PADDED, gn * ps, |xp| {
            pad_into(g, xg, xp);
            with_scratch(&FWD_PIXELS, npix, |pin| {
                // For each output pixel j of the group: its padded input position.
                pixel_positions(g, pin);
                let pin: &[usize] = pin;
                // Largest offset read: the last tap from the last pixel; checked once so the
                // kernel's reads are in bounds.
                let last = pin[npix - 1] + offs[depth - 1];
                assert!(last < xp.len(), "direct conv: padded input too short");
                let (r, l) = (T::R, T::L);
                let pb = r * BLOCK_TILES;
                let mut tile = [0.0f32; MAX_TILE];
                let mut bases = [std::ptr::null(); MAX_R];
                // A block of BLOCK_TILES tiles, channel-major: stage[lane * pb + pixel]. The
                // tiles are pixel-major; writing them straight to the NCHW output touched L
                // channel rows HoWo floats apart for every R pixels (4 KiB apart at 32 x 32:
                // one L1 set, evicted and fetched again tile after tile). Through the stage,
                // each channel's pixels of the block go out as one contiguous run.
                let mut stage = [0.0f32; MAX_L * MAX_R * BLOCK_TILES];
                for q in 0..g.c_out.div_ceil(l) {
                    let panel = &wpan[q * depth * l..][..depth * l];
                    let cos = (l * q)..(l * q + l).min(g.c_out);
                    for b0 in (0..npix).step_by(pb) {
                        let bn = pb.min(npix - b0);
                        for t0 in (b0..b0 + bn).step_by(r) {
                            let valid = r.min(b0 + bn - t0);
                            // Rows past the last pixel repeat it (in bounds), never stored.
                            for (i, b) in bases[..r].iter_mut().enumerate() {
                                *b = xp[pin[(t0 + i).min(npix - 1)]..].as_ptr();
                            }
                            // SAFETY: the caller checked the tile's CPU features (`isa()`);
                            // `offs` has `depth` entries; every base is a pixel's padded
                            // position and every base + offset is at most `last`, which is
                            // inside `xp` (asserted above: positions and offsets grow with
                            // the pixel and the tap); the panel holds depth * L floats.
                            unsafe {
                                T::run(
                                    depth,
                                    offs.as_ptr(),
                                    &bases[..r],
                                    panel.as_ptr(),
                                    &mut tile[..r * l],
                                )
                            };
                            for (i, row) in tile[..valid * l].chunks_exact(l).enumerate() {
                                let at = t0 - b0 + i;
                                for (lane, &v) in row.iter().enumerate() {
                                    stage[lane * pb + at] = v;
                                }
                            }
                        }
                        // Each channel's run of the block, split where an image ends.
                        for co in cos.clone() {
                            let src = &stage[(co - l * q) * pb..][..bn];
                            let add = bias.map(|b| b[co]);
                            let mut j = 0;
                            while j < bn {
                                let (img, at) = ((b0 + j) / hw, (b0 + j) % hw);
                                let run = (hw - at).min(bn - j);
                                let dst = &mut yg[(img * g.c_out + co) * hw + at..][..run];
                                for (d, &v) in dst.iter_mut().zip(&src[j..j + run]) {
                                    let mut v = v;
                                    if let Some(b) = add {
                                        v += b;
                                    }
                                    if relu && v < 0.0 {
                                        v = 0.0;
                                    }
                                    *d = v;
                                }
                                j += run;
                            }
                        }
                    }
                }
            });
        });
    }
}

/// Columns of one forward GEMM when images are small (see [`conv2d_forward`]).
const GROUP_COLS: usize = 1024;

thread_local! {
    static OUT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` elements of this thread's scratch `key` (reused across calls, so no
/// allocation in steady state; a fresh buffer when the scratch is already in use by an outer
/// call on this thread).
fn with_scratch<T: Clone + Default, R>(
    key: &'static std::thread::LocalKey<RefCell<Vec<T>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(len, T::default());
            }
            f(&mut v[..len])
        }
        Err(_) => f(&mut vec![T::default(); len]),
    })
}

/// `col(X)` of `images` consecutive images as the GEMM's B operand
/// (`Cin*Kh*Kw x images*HoWo`), packed on the fly.
struct GroupIm2col<'a> {
    x: &'a [f32],
    g: Conv2d,
    ho: usize,
    wo: usize,
    images: usize,
}

impl PackB for GroupIm2col<'_> {
    fn depth(&self) -> usize {
        self.g.depth()
    }
    fn cols(&self) -> usize {
        self.images * self.ho * self.wo
    }
    fn pack(&self, p0: usize, kc: usize, j0: usize, w: usize, nr: usize, out: &mut [f32]) {
        let (hw, xs) = (self.ho * self.wo, self.g.c_in * self.g.h * self.g.w);
        let panel = kc * nr;
        let mut buf = [0.0f32; SEG];
        // Row by row of the column matrix, SEG columns at a time, scattered into the panels.
        for c0 in (0..w).step_by(SEG / nr * nr) {
            let len = (SEG / nr * nr).min(w - c0);
            for p in 0..kc {
                for_each_image_run(hw, j0 + c0, len, |img, pix, at, run| {
                    let x = &self.x[img * xs..][..xs];
                    let im = Im2col {
                        x,
                        g: self.g,
                        wo: self.wo,
                    };
                    im.row_segment(p0 + p, pix, &mut buf[at..at + run]);
                });
                for (t, chunk) in buf[..len].chunks(nr).enumerate() {
                    let dst = &mut out[(c0 / nr + t) * panel + p * nr..][..nr];
                    dst[..chunk.len()].copy_from_slice(chunk);
                    dst[chunk.len()..].fill(0.0);
                }
            }
        }
    }
}

/// Columns staged per step by [`interleave_panel`].
const CH: usize = 128;
/// Staging rows for one panel: up to 32 rows (the widest micro-panel) of CH columns.
type Stage = [[f32; CH]; 32];

/// Fills one k-major panel of width `R` from `rows` source rows (the rest zero):
/// `panel[p * R + i] = row_i[p]`, where `fetch(i, p_off, dst)` writes row `i`'s columns
/// `p_off .. p_off + dst.len()` (relative to the panel's first column). `tmp` is staging
/// space, passed in so it is not re-initialized for every panel.
fn interleave_panel<const R: usize>(
    rows: usize,
    kc: usize,
    panel: &mut [f32],
    tmp: &mut Stage,
    mut fetch: impl FnMut(usize, usize, &mut [f32]),
) {
    for c0 in (0..kc).step_by(CH) {
        let len = CH.min(kc - c0);
        for (i, t) in tmp[..R].iter_mut().enumerate() {
            if i < rows {
                fetch(i, c0, &mut t[..len]);
            } else {
                t[..len].fill(0.0);
            }
        }
        for (p, d) in panel[c0 * R..][..len * R].chunks_exact_mut(R).enumerate() {
            for i in 0..R {
                d[i] = tmp[i][p];
            }
        }
    }
}

/// [`interleave_panel`] for a run-time panel width.
fn interleave_any(
    width: usize,
    rows: usize,
    kc: usize,
    panel: &mut [f32],
    tmp: &mut Stage,
    fetch: impl FnMut(usize, usize, &mut [f32]),
) {
    match width {
        6 => interleave_panel::<6>(rows, kc, panel, tmp, fetch),
        8 => interleave_panel::<8>(rows, kc, panel, tmp, fetch),
        12 => interleave_panel::<12>(rows, kc, panel, tmp, fetch),
        16 => interleave_panel::<16>(rows, kc, panel, tmp, fetch),
        32 => interleave_panel::<32>(rows, kc, panel, tmp, fetch),
        _ => {
            let mut fetch = fetch;
            let mut row = vec![0.0f32; kc];
            panel[..kc * width].fill(0.0);
            for i in 0..rows {
                fetch(i, 0, &mut row);
                for (d, &v) in panel[i..].iter_mut().step_by(width).zip(&row) {
                    *d = v;
                }
            }
        }
    }
}

/// Walks the batch-wide column range `p0 .. p0 + len` (`hw` columns per image) image by
/// image: `f(image, first column in the image, offset into the range, run length)`.
fn for_each_image_run(
    hw: usize,
    p0: usize,
    len: usize,
    mut f: impl FnMut(usize, usize, usize, usize),
) {
    let mut p = p0;
    while p < p0 + len {
        let (img, pix) = (p / hw, p % hw);
        let run = (hw - pix).min(p0 + len - p);
        f(img, pix, p - p0, run);
        p += run;
    }
}

/// `col(X)` of the whole batch as the GEMM's A operand: `(Cin*Kh*Kw) x (N * HoWo)`.
struct BatchIm2col<'a> {
    x: &'a [f32],
    g: Conv2d,
    ho: usize,
    wo: usize,
}

impl PackA for BatchIm2col<'_> {
    fn rows(&self) -> usize {
        self.g.depth()
    }
    fn depth(&self) -> usize {
        self.g.n * self.ho * self.wo
    }
    fn pack(&self, i0: usize, h: usize, p0: usize, kc: usize, mr: usize, out: &mut [f32]) {
        let (hw, xs) = (self.ho * self.wo, self.g.c_in * self.g.h * self.g.w);
        let mut tmp: Stage = [[0.0; CH]; 32];
        for (q, panel) in out.chunks_exact_mut(kc * mr).enumerate() {
            let rows = mr.min(h - q * mr);
            interleave_any(mr, rows, kc, panel, &mut tmp, |i, off, dst| {
                let kidx = i0 + q * mr + i;
                for_each_image_run(hw, p0 + off, dst.len(), |img, pix, at, run| {
                    let x = &self.x[img * xs..][..xs];
                    let im = Im2col {
                        x,
                        g: self.g,
                        wo: self.wo,
                    };
                    im.row_segment(kidx, pix, &mut dst[at..at + run]);
                });
            });
        }
    }
}

/// `dY^T` of the whole batch as the GEMM's B operand: `(N * HoWo) x Cout`.
struct BatchDyT<'a> {
    dy: &'a [f32],
    c_out: usize,
    hw: usize,
    n: usize,
}

impl PackB for BatchDyT<'_> {
    fn depth(&self) -> usize {
        self.n * self.hw
    }
    fn cols(&self) -> usize {
        self.c_out
    }
    fn pack(&self, p0: usize, kc: usize, j0: usize, w: usize, nr: usize, out: &mut [f32]) {
        let mut tmp: Stage = [[0.0; CH]; 32];
        for (q, panel) in out.chunks_exact_mut(kc * nr).enumerate() {
            let cols = nr.min(w - q * nr);
            interleave_any(nr, cols, kc, panel, &mut tmp, |jj, off, dst| {
                let co = j0 + q * nr + jj;
                for_each_image_run(self.hw, p0 + off, dst.len(), |img, pix, at, run| {
                    let src = &self.dy[(img * self.c_out + co) * self.hw + pix..][..run];
                    dst[at..at + run].copy_from_slice(src);
                });
            });
        }
    }
}

/// `dW (+)= sum_n dY[n] * col(X[n])^T`: the weight gradient, `Cout x Cin x Kh x Kw`.
/// With `accumulate`, adds to `dw` (gradient accumulation); otherwise overwrites it.
///
/// Computed as `dW^T = col(X) * dY^T`, one GEMM whose reduction runs over every pixel of the
/// batch: the column matrix is the A operand (`Cin*Kh*Kw` rows fill whole micro-panels) and
/// the result is written through a transposed view of `dw`.
///
/// # Errors
/// An invalid geometry or a slice of the wrong length.
pub fn conv2d_backward_weight(
    g: &Conv2d,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    g.validate()?;
    check_len("conv2d input", x.len(), g.x_len())?;
    check_len("conv2d output gradient", dy.len(), g.y_len())?;
    check_len("conv2d weight gradient", dw.len(), g.w_len())?;
    #[cfg(target_arch = "x86_64")]
    if !g.is_pointwise() && g.n > 0 {
        match crate::kernels::isa() {
            crate::kernels::Isa::Avx512 if !direct::narrow(g.c_out) => {
                direct::weight_grad::<direct::Avx512Tile>(g, x, dy, dw, accumulate);
                return Ok(());
            }
            crate::kernels::Isa::Avx512 | crate::kernels::Isa::Avx2Fma => {
                direct::weight_grad::<direct::Avx2Tile>(g, x, dy, dw, accumulate);
                return Ok(());
            }
            crate::kernels::Isa::Portable => {}
        }
    }
    let (ho, wo) = (g.out_h(), g.out_w());
    let a = BatchIm2col { x, g: *g, ho, wo };
    let b = BatchDyT {
        dy,
        c_out: g.c_out,
        hw: ho * wo,
        n: g.n,
    };
    let params = GemmParams::new().beta(if accumulate { 1.0 } else { 0.0 });
    let depth = g.depth();
    gemm_packed(&params, &a, &b, MatMut::new(dw, depth, g.c_out, 1, depth)?)
}

thread_local! {
    static COLS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static FLIPPED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `dX = conv2d_input_gradient(dY, W)`, `N x Cin x H x W`, overwritten.
///
/// # Errors
/// An invalid geometry or a slice of the wrong length.
pub fn conv2d_backward_input(g: &Conv2d, dy: &[f32], w: &[f32], dx: &mut [f32]) -> Result<()> {
    g.validate()?;
    check_len("conv2d output gradient", dy.len(), g.y_len())?;
    check_len("conv2d weight", w.len(), g.w_len())?;
    check_len("conv2d input gradient", dx.len(), g.x_len())?;
    if g.n == 0 {
        return Ok(());
    }
    let (ho, wo) = (g.out_h(), g.out_w());
    if g.stride == (1, 1) && g.pad.0 < g.kh && g.pad.1 < g.kw {
        // The transposed convolution of a stride-1 convolution is a convolution of dY with
        // the kernel flipped in space and transposed in channels, padded by K - 1 - p.
        let (kh, kw) = (g.kh, g.kw);
        let t = Conv2d {
            n: g.n,
            c_in: g.c_out,
            h: ho,
            w: wo,
            c_out: g.c_in,
            kh,
            kw,
            stride: (1, 1),
            pad: (kh - 1 - g.pad.0, kw - 1 - g.pad.1),
        };
        debug_assert_eq!((t.out_h(), t.out_w()), (g.h, g.w));
        // The flipped kernel lives in a per-thread scratch: no allocation in steady state.
        return with_scratch(&FLIPPED, g.w_len(), |wf| {
            for co in 0..g.c_out {
                for ci in 0..g.c_in {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            wf[((ci * g.c_out + co) * kh + (kh - 1 - ky)) * kw + (kw - 1 - kx)] =
                                w[((co * g.c_in + ci) * kh + ky) * kw + kx];
                        }
                    }
                }
            }
            conv2d_forward(&t, dy, wf, None, false, dx)
        });
    }
    // Strided (or padded beyond the kernel): dcol = W^T dY into a per-thread scratch for a
    // group of images (about GROUP_COLS columns, so W^T is packed once per group), then
    // col2im for each image of the group.
    let depth = g.depth();
    let wm = MatRef::row_major(w, g.c_out, depth)?.t();
    let hw = ho * wo;
    let (xs, ys) = (g.c_in * g.h * g.w, g.c_out * hw);
    let group = (GROUP_COLS / hw).clamp(1, g.n);
    let parallel_groups = g.n > group;
    let one = |(dyg, dxg): (&[f32], &mut [f32])| -> Result<()> {
        let gn = dyg.len() / ys;
        let mut params = GemmParams::new();
        if parallel_groups {
            params = params.sequential();
        }
        with_scratch(&COLS, depth * gn * hw, |cols| {
            let b = GroupRows {
                x: dyg,
                rows: g.c_out,
                hw,
                images: gn,
            };
            gemm_packed(&params, &wm, &b, MatMut::row_major(cols, depth, gn * hw)?)?;
            for (img, dxi) in dxg.chunks_exact_mut(xs).enumerate() {
                col2im(g, ho, wo, &cols[img * hw..], gn * hw, dxi);
            }
            Ok(())
        })
    };
    for_each_group(dy, ys * group, dx, xs * group, one)
}

/// `images` consecutive `rows x hw` planes side by side as one GEMM operand
/// `rows x images*hw` (`B[r, img*hw + pix] = x[img, r, pix]`).
struct GroupRows<'a> {
    x: &'a [f32],
    rows: usize,
    hw: usize,
    images: usize,
}

impl PackB for GroupRows<'_> {
    fn depth(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.images * self.hw
    }
    fn pack(&self, p0: usize, kc: usize, j0: usize, w: usize, nr: usize, out: &mut [f32]) {
        let panel = kc * nr;
        for p in 0..kc {
            let r = p0 + p;
            for (q, c0) in (0..w).step_by(nr).enumerate() {
                let dst = &mut out[q * panel + p * nr..][..nr];
                let len = nr.min(w - c0);
                for_each_image_run(self.hw, j0 + c0, len, |img, pix, at, run| {
                    let src = &self.x[(img * self.rows + r) * self.hw + pix..][..run];
                    dst[at..at + run].copy_from_slice(src);
                });
                dst[len..].fill(0.0);
            }
        }
    }
}

/// `dx = col2im(cols)`: each column entry added back to the input pixel it was read from.
/// Row `p` of the column matrix starts at `cols[p * ld]`.
fn col2im(g: &Conv2d, ho: usize, wo: usize, cols: &[f32], ld: usize, dx: &mut [f32]) {
    dx.fill(0.0);
    let (sh, sw) = g.stride;
    let (ph, pw) = g.pad;
    // The outputs `o` whose input position `o * s + k - p` lies in `0..n`: `lo..hi`.
    let valid = |k: usize, s: usize, p: usize, n: usize, outs: usize| {
        let lo = p.saturating_sub(k).div_ceil(s);
        let hi = (n + p).saturating_sub(k).div_ceil(s).min(outs);
        (lo, hi.max(lo))
    };
    for ci in 0..g.c_in {
        let plane = &mut dx[ci * g.h * g.w..][..g.h * g.w];
        for ky in 0..g.kh {
            let (oy0, oy1) = valid(ky, sh, ph, g.h, ho);
            for kx in 0..g.kw {
                let (ox0, ox1) = valid(kx, sw, pw, g.w, wo);
                if ox0 == ox1 {
                    continue;
                }
                let p = (ci * g.kh + ky) * g.kw + kx;
                let row = &cols[p * ld..][..ho * wo];
                for oy in oy0..oy1 {
                    let iy = oy * sh + ky - ph;
                    // Input columns ox * sw + kx - pw for ox in ox0..ox1, all in bounds.
                    let start = ox0 * sw + kx - pw;
                    let dst = &mut plane[iy * g.w + start..][..(ox1 - ox0 - 1) * sw + 1];
                    let src = &row[oy * wo + ox0..oy * wo + ox1];
                    for (d, &v) in dst.iter_mut().step_by(sw).zip(src) {
                        *d += v;
                    }
                }
            }
        }
    }
}
