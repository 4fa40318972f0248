//! 2-D convolution (NCHW, any kernel size, stride and padding; dilation 1, groups 1), never
//! through a materialized column matrix: the public passes and which strategy runs each.
//!
//! The strategy depends on the geometry and the CPU's instruction set only, never on the
//! thread count (`Conv2dImpl::choose` and `InputGradImpl::choose` below):
//!
//! - Direct (`direct/`, x86_64 with AVX2 or AVX-512, every kernel but the 1x1 unpadded
//!   ones): the forward pass and the weight gradient run a direct convolution on the gather
//!   microkernel: a zero-padded copy of a group of images, then 6x16 (AVX2) or 8x32
//!   (AVX-512) register tiles whose A values per step are broadcast straight from the padded
//!   image at `pixel position + tap offset` (pixels x taps for the forward pass, taps x
//!   pixels for the weight gradient, summed over groups of images in a fixed order). Forward
//!   outputs at least 16 pixels wide run on the row tiles instead (`direct/rows.rs`: pixels
//!   of a row in the lanes, output channels broadcast, stored straight into NCHW), with the
//!   same bits.
//! - Winograd (`winograd/`, AVX-512 and AVX2, 3x3 stride-1 pad-1 kernels with at least 32
//!   input and output channels, chosen before the direct strategy; the weight gradient on
//!   AVX-512 from 64 channels): F(2x2, 3x3) (Lavin & Gray 2016), 16 multiplications per 2x2
//!   output tile instead of 36. Forward per group of images: the input tiles transformed into
//!   16 matrices `V[k]`, multiplied by the transformed filters `U[k]` (register tiles),
//!   the products transformed back into NCHW with the bias, residual and ReLU in the store.
//!   The stride-1 input gradient of such a layer runs through it too (`flipped.rs`). Weight
//!   gradient (`winograd/weight_grad.rs`): the transformed output gradient `Z[k]` times the
//!   transposed `V[k]` summed over every tile of the batch (16 products `dU[k]`, fixed
//!   chunks of groups of images added in chunk order), then `dW = G^T dU G`.
//! - Implicit im2col (`im2col/`, the portable path but for pointwise strided kernels, and
//!   1x1 stride-1 unpadded kernels on every CPU): GEMM with implicit im2col (Chellapilla et
//!   al. 2006 for the lowering): the GEMM's packers read panels straight from the image.
//!   Forward per group of small images `Y = W * col(X)` (bias and ReLU in the epilogue);
//!   weight gradient one GEMM `dW^T = col(X) * dY^T` over every pixel of the batch, so the
//!   sum over images is never split across threads. 1x1, stride 1, no padding: the image
//!   itself is the GEMM operand.
//! - Pointwise strided (`pointwise_strided.rs`, every CPU: 1x1 unpadded kernels with a
//!   stride above 1, the ResNet shortcut projections): all three passes on the subsampled
//!   input `Xs`. Forward per image `Y = W * Xs` by GEMM; input gradient per image
//!   `W^T * dY` by GEMM, spread over the strided pixels of `dX` (zero elsewhere); weight
//!   gradient `dW = dY * Xs^T` as dot products along the pixels (no transposes), the batch
//!   cut into a fixed number of chunks whose sums are added in chunk order.
//! - Input gradient: for stride 1 (`flipped.rs`) a forward convolution of `dY` with the
//!   flipped, transposed kernel (padding `K - 1 - p`), by the forward's strategy; for larger
//!   strides (or padding of at least the kernel size) with AVX2 or AVX-512 (`polyphase.rs`)
//!   one stride-1 correlation of `dY` per residue class of the input pixels, each with its
//!   sub-kernel, on the direct convolution's gather tiles, staged per block of input rows
//!   and written into `dX` once; pointwise strided kernels by their own strategy (above);
//!   other 1x1 kernels and the portable path (`col2im.rs`) `dcol = W^T * dY` per group of
//!   images into a per-thread scratch, then col2im accumulation into `dX`.

mod col2im;
#[cfg(target_arch = "x86_64")]
mod direct;
mod flipped;
mod geometry;
mod im2col;
mod pointwise_strided;
#[cfg(target_arch = "x86_64")]
mod polyphase;
mod scratch;
#[cfg(target_arch = "x86_64")]
mod winograd;

pub use geometry::Conv2d;
pub use scratch::scratch_bytes;

use crate::error::{check_len, Result};
use rayon::prelude::*;
use std::cell::RefCell;

/// How the forward pass and the weight gradient of a geometry run on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Conv2dImpl {
    /// Direct convolution on the AVX-512 8x32 gather tile (`direct/`).
    #[cfg(target_arch = "x86_64")]
    DirectAvx512,
    /// Direct convolution on the AVX2+FMA 6x16 gather tile (`direct/`), also on AVX-512 CPUs
    /// for at most 16 output channels.
    #[cfg(target_arch = "x86_64")]
    DirectAvx2,
    /// GEMM with implicit im2col (`im2col/`).
    Im2col,
    /// 1x1, unpadded, strided: GEMM over the subsampled input, dot-product tiles for the
    /// weight gradient (`pointwise_strided.rs`).
    PointwiseStrided,
}

impl Conv2dImpl {
    /// Pointwise strided for 1x1 unpadded kernels with a stride above 1 on every CPU;
    /// direct for any other kernel but the pointwise one (1x1, stride 1, unpadded) on a
    /// batch of images when the CPU has AVX2 or AVX-512 (the AVX2 tile for a narrow `Cout`,
    /// see `direct::narrow`); implicit im2col otherwise.
    fn choose(g: &Conv2d) -> Self {
        if g.is_pointwise_strided() && g.n > 0 {
            return Self::PointwiseStrided;
        }
        #[cfg(target_arch = "x86_64")]
        if !g.is_pointwise() && g.n > 0 {
            match crate::kernels::isa() {
                crate::kernels::Isa::Avx512 if !direct::narrow(g.c_out) => {
                    return Self::DirectAvx512
                }
                crate::kernels::Isa::Avx512 | crate::kernels::Isa::Avx2Fma => {
                    return Self::DirectAvx2
                }
                crate::kernels::Isa::Portable => {}
            }
        }
        Self::Im2col
    }
}

/// How the input gradient of a geometry runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InputGradImpl {
    /// The transposed convolution as a forward convolution (`flipped.rs`).
    Flipped,
    /// Polyphase decomposition on the AVX-512 8x32 gather tile (`polyphase.rs`).
    #[cfg(target_arch = "x86_64")]
    PolyphaseAvx512,
    /// Polyphase decomposition on the AVX2+FMA 6x16 gather tile (`polyphase.rs`), also on
    /// AVX-512 CPUs for at most 16 input channels (the lanes).
    #[cfg(target_arch = "x86_64")]
    PolyphaseAvx2,
    /// `dcol = W^T * dY`, then col2im (`col2im.rs`).
    Col2im,
    /// 1x1, unpadded, strided: `W^T * dY` spread over the strided pixels
    /// (`pointwise_strided.rs`).
    PointwiseStrided,
}

impl InputGradImpl {
    /// Pointwise strided for 1x1 unpadded kernels with a stride above 1; flipped for
    /// stride 1 with padding below the kernel size; otherwise (strides above 1, or padding
    /// of at least the kernel size) polyphase for kernels larger than 1x1 when the CPU has
    /// AVX2 or AVX-512 (its lanes are the input channels: the AVX2 tile for a narrow
    /// `Cin`); col2im for padded 1x1 kernels and on the portable path.
    fn choose(g: &Conv2d) -> Self {
        if g.is_pointwise_strided() {
            return Self::PointwiseStrided;
        }
        if g.stride == (1, 1) && g.pad.0 < g.kh && g.pad.1 < g.kw {
            return Self::Flipped;
        }
        #[cfg(target_arch = "x86_64")]
        match crate::kernels::isa() {
            _ if g.kh * g.kw == 1 => {}
            crate::kernels::Isa::Avx512 if !direct::narrow(g.c_in) => return Self::PolyphaseAvx512,
            crate::kernels::Isa::Avx512 | crate::kernels::Isa::Avx2Fma => {
                return Self::PolyphaseAvx2
            }
            crate::kernels::Isa::Portable => {}
        }
        Self::Col2im
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
    forward_impl(g, x, w, bias, None, relu, y)
}

/// `Y = act(conv(X, W) (+ bias) + R)`: the forward pass with a residual `R` of `Y`'s shape
/// added before the optional ReLU, a residual block's join fused into the convolution
/// before it. The same bits as [`conv2d_forward`] without ReLU followed by
/// [`add_relu`](crate::kernels::elementwise::add_relu) (or `add`) with `R`. The row tiles
/// and the pointwise strided strategy add `R` in their store; the others run a pass over
/// `Y` after the convolution.
///
/// # Errors
/// As [`conv2d_forward`]; a residual whose length is not `Y`'s.
pub fn conv2d_forward_residual(
    g: &Conv2d,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    residual: &[f32],
    relu: bool,
    y: &mut [f32],
) -> Result<()> {
    check_len("conv2d residual", residual.len(), y.len())?;
    forward_impl(g, x, w, bias, Some(residual), relu, y)
}

fn forward_impl(
    g: &Conv2d,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
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
    let out = Store {
        bias,
        residual,
        relu,
    };
    #[cfg(target_arch = "x86_64")]
    if winograd::applies(g) {
        return winograd::forward(g, x, w, out, y);
    }
    match Conv2dImpl::choose(g) {
        #[cfg(target_arch = "x86_64")]
        Conv2dImpl::DirectAvx512 => direct::forward::<direct::Avx512Tile>(g, x, w, out, y),
        #[cfg(target_arch = "x86_64")]
        Conv2dImpl::DirectAvx2 => direct::forward::<direct::Avx2Tile>(g, x, w, out, y),
        Conv2dImpl::Im2col => out.after(y, |bias, relu, y| im2col::forward(g, x, w, bias, relu, y)),
        Conv2dImpl::PointwiseStrided => pointwise_strided::forward(g, x, w, out, y),
    }
}

/// What a forward pass applies to each output as it stores it: `act(v + bias + residual)`.
#[derive(Clone, Copy)]
struct Store<'a> {
    bias: Option<&'a [f32]>,
    /// Of the output's shape, added after the bias.
    residual: Option<&'a [f32]>,
    relu: bool,
}

impl Store<'_> {
    /// For a strategy that applies the bias and the ReLU only: `run(bias, relu, y)`, then
    /// the residual and the ReLU in a pass over `y` (the same operations in the same order).
    fn after(
        self,
        y: &mut [f32],
        run: impl FnOnce(Option<&[f32]>, bool, &mut [f32]) -> Result<()>,
    ) -> Result<()> {
        let Some(r) = self.residual else {
            return run(self.bias, self.relu, y);
        };
        run(self.bias, false, y)?;
        if self.relu {
            crate::kernels::elementwise::add_relu_assign(y, r)
        } else {
            crate::kernels::elementwise::add_assign(y, r)
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
    if winograd::weight_grad_applies(g) {
        winograd::weight_grad(g, x, dy, dw, accumulate);
        return Ok(());
    }
    match Conv2dImpl::choose(g) {
        #[cfg(target_arch = "x86_64")]
        Conv2dImpl::DirectAvx512 => {
            direct::weight_grad::<direct::Avx512Tile>(g, x, dy, dw, accumulate);
            Ok(())
        }
        #[cfg(target_arch = "x86_64")]
        Conv2dImpl::DirectAvx2 => {
            direct::weight_grad::<direct::Avx2Tile>(g, x, dy, dw, accumulate);
            Ok(())
        }
        Conv2dImpl::Im2col => im2col::weight_grad(g, x, dy, dw, accumulate),
        Conv2dImpl::PointwiseStrided => {
            pointwise_strided::weight_grad(g, x, dy, dw, accumulate);
            Ok(())
        }
    }
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
    match InputGradImpl::choose(g) {
        InputGradImpl::Flipped => flipped::input_grad(g, dy, w, dx),
        #[cfg(target_arch = "x86_64")]
        InputGradImpl::PolyphaseAvx512 => polyphase::input_grad::<direct::Avx512Tile>(g, dy, w, dx),
        #[cfg(target_arch = "x86_64")]
        InputGradImpl::PolyphaseAvx2 => polyphase::input_grad::<direct::Avx2Tile>(g, dy, w, dx),
        InputGradImpl::Col2im => col2im::input_grad(g, dy, w, dx),
        InputGradImpl::PointwiseStrided => pointwise_strided::input_grad(g, dy, w, dx),
    }
}

// ---------------------------------------------------------------------------------------
// Shared by the strategies.

/// Columns of one forward GEMM when images are small (see [`conv2d_forward`]).
const GROUP_COLS: usize = 1024;

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

/// Images per group of a pass over groups of whole images: as many as fit `bytes` at
/// `per_image` bytes each, but at least `min_groups` groups when the batch has the images
/// (two or three large groups would split unevenly over two threads); from the shapes only,
/// never from the thread count.
fn images_per_group(n: usize, bytes: usize, per_image: usize, min_groups: usize) -> usize {
    (bytes / per_image.max(1))
        .min(n.div_ceil(min_groups))
        .clamp(1, n.max(1))
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
