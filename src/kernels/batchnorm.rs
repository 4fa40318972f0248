//! BatchNorm2d over NCHW (Ioffe & Szegedy 2015) with PyTorch semantics, optionally fused
//! with ReLU: training forward (batch statistics), eval forward (running statistics),
//! training backward, and the eval-mode fold into a per-channel scale and shift; and a
//! training BatchNorm fused with the residual join `act(bn(x) + addend)` after it.
//!
//! - Statistics: one read of each channel. Per block of at most 256 values, while it sits in
//!   L1, a corrected two-pass mean and sum of squared deviations in `f32x8` lanes; the blocks
//!   are merged in `f64` in index order (Chan et al.'s pairwise update).
//! - Normalization uses the biased batch variance; the running variance is updated with the
//!   unbiased one: `running = (1 - momentum) * running + momentum * batch`.
//! - Backward: `dx = gamma * inv_std / M * (M dy - sum(dy) - xhat * sum(dy xhat))`,
//!   `dgamma = sum(dy xhat)`, `dbeta = sum(dy)`, with `M = N * H * W`. With the fused ReLU
//!   the mask `y > 0` is recomputed from `x` with the forward's exact arithmetic, so the
//!   output is never read back (two passes over `dy` and `x`, one write of `dx`).
//! - Fused with the residual join: the forward normalizes and adds in one pass (the
//!   BatchNorm's output is never written); the backward writes the join's gradient to the
//!   addend's gradient and sums it for `dgamma`, `dbeta` plane by plane while the plane is
//!   in L1, then reads it back once for `dx`. Same `f32` operations in the same order as
//!   the unfused kernels, so the same bits.
//! - Parallelism: every pass reads memory front to back, split over groups of whole planes.
//!   The reductions write one partial result per block or plane into a scratch buffer, then
//!   each channel merges its partials in index order (the order a sequential walk of the
//!   channel would take), so results are bit-identical for any number of threads. Reading a
//!   channel's planes one after another instead would start a new page at every plane
//!   (a 32x32 plane is one 4 KiB page), where the hardware prefetchers stop. Nothing is
//!   allocated in steady state (the scratch is a per-thread buffer that is reused).

use crate::error::{Error, Result};
use crate::kernels::elementwise::{check_len, CHUNK};
use rayon::prelude::*;
use std::cell::RefCell;
use wide::f32x8;

/// The geometry and hyper-parameters of one BatchNorm2d: input `N x C x H x W`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNorm2d {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    /// Added to the variance before the square root (PyTorch default `1e-5`).
    pub eps: f32,
    /// Weight of the batch statistic in the running update (PyTorch default `0.1`).
    pub momentum: f32,
}

impl BatchNorm2d {
    /// PyTorch's defaults: `eps = 1e-5`, `momentum = 0.1`.
    pub fn new(n: usize, c: usize, h: usize, w: usize) -> Self {
        Self {
            n,
            c,
            h,
            w,
            eps: 1e-5,
            momentum: 0.1,
        }
    }
    /// Elements of the input tensor.
    pub fn len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Values per channel, `M = N * H * W`.
    pub fn per_channel(&self) -> usize {
        self.n * self.h * self.w
    }
    fn check(&self, op: &'static str, x: usize, y: usize) -> Result<()> {
        if !valid_eps(self.eps) {
            return Err(Error::InvalidArgument {
                op,
                msg: format!("eps must be positive and finite, got {}", self.eps),
            });
        }
        check_len(op, x, self.len())?;
        check_len(op, y, self.len())
    }
}

fn valid_eps(eps: f32) -> bool {
    eps > 0.0 && eps.is_finite()
}

/// The learned affine parameters, one value per channel.
#[derive(Clone, Copy, Debug)]
pub struct BnAffine<'a> {
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
}

/// The running statistics, one value per channel, updated by the training forward.
#[derive(Debug)]
pub struct BnRunning<'a> {
    pub mean: &'a mut [f32],
    pub var: &'a mut [f32],
}

/// What the training forward saves for the backward: per channel the batch mean and
/// `inv_std = 1 / sqrt(biased_var + eps)`. Allocate once with [`BnSaved::new`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BnSaved {
    pub mean: Vec<f32>,
    pub inv_std: Vec<f32>,
}

impl BnSaved {
    /// Zeroed state for `c` channels.
    pub fn new(c: usize) -> Self {
        Self {
            mean: vec![0.0; c],
            inv_std: vec![0.0; c],
        }
    }
}

/// The gradients the backward writes (overwritten, not accumulated).
#[derive(Debug)]
pub struct BnGrads<'a> {
    /// `N x C x H x W`.
    pub dx: &'a mut [f32],
    /// `C`.
    pub dgamma: &'a mut [f32],
    /// `C`.
    pub dbeta: &'a mut [f32],
}

/// Runs `f(channel, plane_index, x_plane, y_plane)` over all planes, parallel over groups
/// of whole planes of about [`CHUNK`] elements.
fn for_planes<F>(bn: &BatchNorm2d, x: &[f32], y: &mut [f32], f: F)
where
    F: Fn(usize, &[f32], &mut [f32], usize) + Sync,
{
    let hw = bn.h * bn.w;
    if hw == 0 || bn.is_empty() {
        return;
    }
    let per = (CHUNK / hw).max(1);
    let group = per * hw;
    y.par_chunks_mut(group)
        .zip(x.par_chunks(group))
        .enumerate()
        .for_each(|(g, (yg, xg))| {
            for (k, (yp, xp)) in yg.chunks_mut(hw).zip(xg.chunks(hw)).enumerate() {
                let plane = g * per + k;
                f(plane % bn.c, xp, yp, plane);
            }
        });
}

/// `y = act((x - mean) * scale + beta)` over one plane (centred first: no cancellation
/// when the values sit far from zero); with `addend`, `y = act(that + addend)` (the
/// residual join after a BatchNorm, in the join's `f32` operations).
#[inline]
fn affine_plane(
    x: &[f32],
    addend: Option<&[f32]>,
    y: &mut [f32],
    (mean, scale, beta): (f32, f32, f32),
    relu: bool,
) {
    let act = |t: f32| if relu && t < 0.0 { 0.0 } else { t };
    match addend {
        None => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = act((v - mean) * scale + beta);
            }
        }
        Some(a) => {
            for ((o, &v), &r) in y.iter_mut().zip(x).zip(a) {
                *o = act((v - mean) * scale + beta + r);
            }
        }
    }
}

fn check_channels(op: &'static str, c: usize, lens: &[usize]) -> Result<()> {
    for &l in lens {
        check_len(op, l, c)?;
    }
    Ok(())
}

/// Values per statistics block: small enough to stay in L1 between its two passes.
const STAT_BLOCK: usize = 256;

/// Count, mean and sum of squared deviations of a run of values.
#[derive(Clone, Copy, Debug, Default)]
struct Moments {
    n: f64,
    mean: f64,
    m2: f64,
}

impl Moments {
    /// A block's moments by the corrected two-pass algorithm: an approximate centre `c`
    /// (the mean of `x / len` in `f32` lanes, which cannot overflow), then
    /// `d1 = sum(x - c)` and `d2 = sum((x - c)^2)` in `f32` lanes, so `mean = c + d1 / len`
    /// and `M2 = d2 - d1^2 / len` (Chan, Golub and LeVeque 1983).
    fn of_block(x: &[f32]) -> Self {
        let len = x.len();
        let inv = 1.0 / len as f32;
        let (chunks, tail) = x.split_at(len - len % 8);
        let mut a = f32x8::ZERO;
        for v in chunks.chunks_exact(8) {
            a += lanes(v) * f32x8::splat(inv);
        }
        let c = a.reduce_add() + tail.iter().map(|&v| v * inv).sum::<f32>();
        let vc = f32x8::splat(c);
        let (mut s1, mut s2) = (f32x8::ZERO, f32x8::ZERO);
        for v in chunks.chunks_exact(8) {
            let d = lanes(v) - vc;
            s1 += d;
            s2 += d * d;
        }
        let (mut d1, mut d2) = (f64::from(s1.reduce_add()), f64::from(s2.reduce_add()));
        for &v in tail {
            let d = v - c;
            d1 += f64::from(d);
            d2 += f64::from(d * d);
        }
        let n = len as f64;
        Self {
            n,
            mean: f64::from(c) + d1 / n,
            m2: (d2 - d1 * d1 / n).max(0.0),
        }
    }

    /// The moments as written in a [`BnSync`] buffer: count, mean, M2.
    fn to_array(self) -> [f64; MOMENTS_PER_CHANNEL] {
        [self.n, self.mean, self.m2]
    }

    /// The moments of one channel of a [`BnSync`] buffer.
    fn of_channel(buf: &[f64], c: usize) -> Self {
        let m = &buf[c * MOMENTS_PER_CHANNEL..][..MOMENTS_PER_CHANNEL];
        Self {
            n: m[0],
            mean: m[1],
            m2: m[2],
        }
    }

    /// The moments of the union of two disjoint runs.
    fn merge(self, b: Self) -> Self {
        if self.n == 0.0 {
            return b;
        }
        let n = self.n + b.n;
        let delta = b.mean - self.mean;
        Self {
            n,
            mean: self.mean + delta * (b.n / n),
            m2: self.m2 + b.m2 + delta * delta * (self.n * b.n / n),
        }
    }
}

thread_local! {
    /// The reductions' per-block or per-plane partial results (see [`with_partials`]).
    static PARTIALS: RefCell<Vec<f64>> = RefCell::default();
}

/// Fills `width` values per plane of the input (`N * C` planes, index order) with
/// `part(plane, out)`, parallel over groups of whole planes of about [`CHUNK`] elements, then
/// returns `finish(partials)`. The partials live in this thread's reused buffer (a fresh one
/// when that is in use further up the stack).
fn with_partials<R>(
    bn: &BatchNorm2d,
    width: usize,
    part: impl Fn(usize, &mut [f64]) + Sync,
    finish: impl FnOnce(&[f64]) -> R,
) -> R {
    with_partials_writing(bn, width, &mut [], |plane, _, out| part(plane, out), finish)
}

/// [`with_partials`] whose `part(plane, t_plane, out)` also gets the plane of a tensor `t`
/// (`N x C x H x W`, or empty: then every `t_plane` is empty) to write.
fn with_partials_writing<R>(
    bn: &BatchNorm2d,
    width: usize,
    t: &mut [f32],
    part: impl Fn(usize, &mut [f32], &mut [f64]) + Sync,
    finish: impl FnOnce(&[f64]) -> R,
) -> R {
    let len = bn.n * bn.c * width;
    let hw = bn.h * bn.w;
    let per = (CHUNK / hw.max(1)).max(1);
    let group = |g: usize, chunk: &mut [f64], tg: &mut [f32]| {
        for (k, out) in chunk.chunks_exact_mut(width).enumerate() {
            let tp = if tg.is_empty() {
                &mut []
            } else {
                &mut tg[k * hw..(k + 1) * hw]
            };
            part(g * per + k, tp, out);
        }
    };
    let run = |buf: &mut [f64]| {
        if len > 0 {
            let chunks = buf.par_chunks_mut(per * width);
            if t.is_empty() || hw == 0 {
                chunks.enumerate().for_each(|(g, c)| group(g, c, &mut []));
            } else {
                chunks
                    .zip(t.par_chunks_mut(per * hw))
                    .enumerate()
                    .for_each(|(g, (c, tg))| group(g, c, tg));
            }
        }
        finish(buf)
    };
    PARTIALS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(len, 0.0);
            }
            run(&mut v[..len])
        }
        Err(_) => run(&mut vec![0.0; len]),
    })
}

/// Runs `finish` on the moments of every block of at most [`STAT_BLOCK`] values of every
/// plane of `x` (a corrected two-pass mean and M2 per block, while it sits in L1), taken in
/// memory order; [`channel_moments`] merges one channel's.
fn with_block_moments<R>(bn: &BatchNorm2d, x: &[f32], finish: impl FnOnce(&[f64]) -> R) -> R {
    let hw = bn.h * bn.w;
    let width = hw.div_ceil(STAT_BLOCK) * MOMENTS_PER_CHANNEL;
    let part = |plane: usize, out: &mut [f64]| {
        let xp = &x[plane * hw..(plane + 1) * hw];
        for (block, o) in xp
            .chunks(STAT_BLOCK)
            .zip(out.chunks_exact_mut(MOMENTS_PER_CHANNEL))
        {
            o.copy_from_slice(&Moments::of_block(block).to_array());
        }
    };
    with_partials(bn, width, part, finish)
}

/// Moments of channel `c` from the block moments of [`with_block_moments`]: merged in `f64`
/// in index order (image by image, block by block; Chan et al.).
fn channel_moments(bn: &BatchNorm2d, blocks: &[f64], c: usize) -> Moments {
    let width = (bn.h * bn.w).div_ceil(STAT_BLOCK) * MOMENTS_PER_CHANNEL;
    let mut acc = Moments::default();
    for n in 0..bn.n {
        let plane = &blocks[(n * bn.c + c) * width..][..width];
        for b in 0..width / MOMENTS_PER_CHANNEL {
            acc = acc.merge(Moments::of_channel(plane, b));
        }
    }
    acc
}

/// Values per channel in a [`BnSync`] moments buffer: count, mean, M2.
pub const MOMENTS_PER_CHANNEL: usize = 3;

/// Synchronized (global) BatchNorm: the statistics of the batch of every process of a
/// data-parallel group. The kernel writes this process's per-channel values into `buf` and
/// calls `reduce(buf)`, which must leave in `buf` the values of the whole group: in the
/// forward, the merged moments ([`batchnorm_merge_moments`] of every rank's, in rank order);
/// in the backward, the element-wise sum of every rank's gradient sums. `ranks` is the
/// group's size (every rank holds a batch of the same shape).
pub struct BnSync<'a> {
    /// `3 C` in the forward, `2 C` in the backward.
    pub buf: &'a mut [f64],
    pub reduce: &'a mut dyn FnMut(&mut [f64]) -> Result<()>,
    pub ranks: usize,
}

impl std::fmt::Debug for BnSync<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BnSync")
            .field("len", &self.buf.len())
            .field("ranks", &self.ranks)
            .finish_non_exhaustive()
    }
}

/// Merges `P` ranks' moment buffers (`parts`: `P` blocks of `3 C` values, rank order) into
/// `out` (`3 C`): per channel the count, mean and M2 of the union, merged in rank order.
///
/// # Errors
/// [`Error::InvalidArgument`] when `parts` is not whole blocks of `out.len()`, or `out` is
/// not whole channels.
pub fn batchnorm_merge_moments(parts: &[f64], out: &mut [f64]) -> Result<()> {
    const OP: &str = "batchnorm_merge_moments";
    let n = out.len();
    if n == 0 || !n.is_multiple_of(MOMENTS_PER_CHANNEL) || !parts.len().is_multiple_of(n) {
        return Err(Error::InvalidArgument {
            op: OP,
            msg: format!(
                "{} values are not whole blocks of {n} channel moments",
                parts.len()
            ),
        });
    }
    for (c, o) in out.chunks_exact_mut(MOMENTS_PER_CHANNEL).enumerate() {
        let acc = parts.chunks_exact(n).fold(Moments::default(), |acc, part| {
            acc.merge(Moments::of_channel(part, c))
        });
        o.copy_from_slice(&acc.to_array());
    }
    Ok(())
}

/// Checks the lengths of a training normalization (and `eps`).
fn check_normalize(
    op: &'static str,
    bn: &BatchNorm2d,
    p: BnAffine<'_>,
    saved: &BnSaved,
    x: &[f32],
    addend: Option<&[f32]>,
    y: &[f32],
) -> Result<()> {
    bn.check(op, x.len(), y.len())?;
    if let Some(a) = addend {
        check_len(op, a.len(), bn.len())?;
    }
    check_channels(
        op,
        bn.c,
        &[
            p.gamma.len(),
            p.beta.len(),
            saved.mean.len(),
            saved.inv_std.len(),
        ],
    )
}

/// The statistics half of the training forward: the batch moments (the group's through
/// `sync`), saved for the backward, and the running statistics' update.
fn train_statistics(
    bn: &BatchNorm2d,
    x: &[f32],
    running: BnRunning<'_>,
    saved: &mut BnSaved,
    sync: Option<BnSync<'_>>,
) -> Result<()> {
    const OP: &str = "batchnorm_forward_train";
    bn.check(OP, x.len(), x.len())?;
    check_channels(
        OP,
        bn.c,
        &[
            running.mean.len(),
            running.var.len(),
            saved.mean.len(),
            saved.inv_std.len(),
        ],
    )?;
    let m = bn.per_channel();
    if m <= 1 && bn.c > 0 {
        return Err(Error::InvalidArgument {
            op: OP,
            msg: format!(
                "expected more than 1 value per channel when training, got input [{}, {}, {}, {}]",
                bn.n, bn.c, bn.h, bn.w
            ),
        });
    }
    let mom = f64::from(bn.momentum);
    let eps = f64::from(bn.eps);
    // One read of x in memory order for the block moments, merged per channel.
    with_block_moments(bn, x, |blocks| -> Result<()> {
        let synced: Option<&[f64]> = match sync {
            None => None,
            Some(BnSync { buf, reduce, .. }) => {
                check_len(OP, buf.len(), MOMENTS_PER_CHANNEL * bn.c)?;
                buf.par_chunks_mut(MOMENTS_PER_CHANNEL)
                    .enumerate()
                    .for_each(|(c, o)| {
                        o.copy_from_slice(&channel_moments(bn, blocks, c).to_array())
                    });
                reduce(buf)?;
                Some(buf)
            }
        };
        saved
            .mean
            .par_iter_mut()
            .zip(saved.inv_std.par_iter_mut())
            .zip(running.mean.par_iter_mut())
            .zip(running.var.par_iter_mut())
            .enumerate()
            .for_each(|(c, (((sm, si), rm), rv))| {
                // The group's moments, or this process's channel's.
                let acc = match synced {
                    Some(g) => Moments::of_channel(g, c),
                    None => channel_moments(bn, blocks, c),
                };
                let m = acc.n as usize;
                let (mean, var) = (acc.mean, (acc.m2 / m as f64).max(0.0));
                let mean32 = mean as f32;
                *sm = mean32;
                *si = (1.0 / (var + eps).sqrt()) as f32;
                let unbiased = var * m as f64 / (m - 1) as f64;
                *rm = ((1.0 - mom) * f64::from(*rm) + mom * mean) as f32;
                *rv = ((1.0 - mom) * f64::from(*rv) + mom * unbiased) as f32;
            });
        Ok(())
    })
}

/// The normalizing half of the training forward, from the saved statistics:
/// `y = act(gamma * (x - mean) * inv_std + beta [+ addend])`, lengths checked.
fn normalize_train(
    bn: &BatchNorm2d,
    p: BnAffine<'_>,
    saved: &BnSaved,
    x: &[f32],
    addend: Option<&[f32]>,
    y: &mut [f32],
    relu: bool,
) {
    let (gamma, beta) = (p.gamma, p.beta);
    let (mean, inv_std) = (&saved.mean, &saved.inv_std);
    let hw = bn.h * bn.w;
    for_planes(bn, x, y, |c, xp, yp, plane| {
        let a = addend.map(|a| &a[plane * hw..(plane + 1) * hw]);
        affine_plane(xp, a, yp, (mean[c], gamma[c] * inv_std[c], beta[c]), relu);
    });
}

#[allow(clippy::too_many_arguments)]
fn train_forward_impl(
    bn: &BatchNorm2d,
    p: BnAffine<'_>,
    x: &[f32],
    addend: Option<&[f32]>,
    running: BnRunning<'_>,
    saved: &mut BnSaved,
    y: &mut [f32],
    relu: bool,
    sync: Option<BnSync<'_>>,
) -> Result<()> {
    // Every length is checked before the running statistics change.
    check_normalize("batchnorm_forward_train", bn, p, saved, x, addend, y)?;
    train_statistics(bn, x, running, saved, sync)?;
    normalize_train(bn, p, saved, x, addend, y, relu);
    Ok(())
}

/// Training forward: normalizes with the batch statistics, updates the running statistics
/// and fills `saved` for the backward. `y = gamma * (x - mean) * inv_std + beta`.
///
/// # Errors
/// [`Error::ShapeMismatch`] when `x`, `y` are not `N*C*H*W` long or a per-channel slice is
/// not `C` long; [`Error::InvalidArgument`] when `N*H*W == 1` (as PyTorch, "expected more
/// than 1 value per channel when training") or `eps` is not positive.
pub fn batchnorm_forward_train(
    bn: &BatchNorm2d,
    p: BnAffine<'_>,
    x: &[f32],
    running: BnRunning<'_>,
    saved: &mut BnSaved,
    y: &mut [f32],
) -> Result<()> {
    train_forward_impl(bn, p, x, None, running, saved, y, false, None)
}

/// [`batchnorm_forward_train`] followed by ReLU, in one pass over the output.
///
/// # Errors
/// As [`batchnorm_forward_train`].
pub fn batchnorm_relu_forward_train(
    bn: &BatchNorm2d,
    p: BnAffine<'_>,
    x: &[f32],
    running: BnRunning<'_>,
    saved: &mut BnSaved,
    y: &mut [f32],
) -> Result<()> {
    train_forward_impl(bn, p, x, None, running, saved, y, true, None)
}

/// The training forward of synchronized BatchNorm: as [`batchnorm_forward_train`] (with
/// `relu`, as [`batchnorm_relu_forward_train`]) but normalized with the statistics of the
/// whole data-parallel group, gathered through `sync` (see [`BnSync`]).
///
/// # Errors
/// As [`batchnorm_forward_train`]; a `sync.buf` that is not `3 C` long; the reduction's.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_train_synced(
    bn: &BatchNorm2d,
    p: BnAffine<'_>,
    x: &[f32],
    running: BnRunning<'_>,
    saved: &mut BnSaved,
    y: &mut [f32],
    relu: bool,
    sync: BnSync<'_>,
) -> Result<()> {
    train_forward_impl(bn, p, x, None, running, saved, y, relu, Some(sync))
}

/// The statistics half of [`batchnorm_forward_train`]: the batch mean and `inv_std`
/// saved for the backward, the running statistics updated, no output written (see
/// [`batchnorm_add_normalize_train`]).
///
/// # Errors
/// As [`batchnorm_forward_train`].
pub fn batchnorm_statistics_train(
    bn: &BatchNorm2d,
    x: &[f32],
    running: BnRunning<'_>,
    saved: &mut BnSaved,
) -> Result<()> {
    train_statistics(bn, x, running, saved, None)
}

/// The normalizing half of a training BatchNorm (without ReLU) fused with the residual
/// join after it: `y = act(bn + addend)` with `bn = gamma * (x - mean) * inv_std + beta`
/// from the statistics [`batchnorm_statistics_train`] saved, `act` ReLU with `relu`. One
/// pass that never writes the BatchNorm's own output, computing the `f32` operations of
/// [`batchnorm_forward_train`] followed by [`crate::kernels::elementwise::add`] (or
/// [`add_relu`](crate::kernels::elementwise::add_relu)), so the bits are theirs.
///
/// # Errors
/// [`Error::ShapeMismatch`] on a wrong length; [`Error::InvalidArgument`] when `eps` is
/// not positive.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_add_normalize_train(
    bn: &BatchNorm2d,
    p: BnAffine<'_>,
    saved: &BnSaved,
    x: &[f32],
    addend: &[f32],
    relu: bool,
    y: &mut [f32],
) -> Result<()> {
    check_normalize(
        "batchnorm_add_forward_train",
        bn,
        p,
        saved,
        x,
        Some(addend),
        y,
    )?;
    normalize_train(bn, p, saved, x, Some(addend), y, relu);
    Ok(())
}

/// Training BatchNorm (without ReLU) and the residual join after it in one:
/// [`batchnorm_statistics_train`] then [`batchnorm_add_normalize_train`].
///
/// # Errors
/// As [`batchnorm_forward_train`]; an `addend` of another length.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_add_forward_train(
    bn: &BatchNorm2d,
    p: BnAffine<'_>,
    x: &[f32],
    addend: &[f32],
    running: BnRunning<'_>,
    saved: &mut BnSaved,
    relu: bool,
    y: &mut [f32],
) -> Result<()> {
    train_forward_impl(bn, p, x, Some(addend), running, saved, y, relu, None)
}

/// Eval-mode fold: `scale = gamma / sqrt(running_var + eps)` and
/// `shift = beta - running_mean * scale`, so that eval BN is `y = x * scale[c] + shift[c]` (a per-row scale and bias in a
/// convolution's GEMM epilogue).
///
/// # Errors
/// [`Error::ShapeMismatch`] when the slices differ in length; [`Error::InvalidArgument`] when
/// `eps` is not positive.
pub fn batchnorm_fold(
    p: BnAffine<'_>,
    running_mean: &[f32],
    running_var: &[f32],
    eps: f32,
    scale: &mut [f32],
    shift: &mut [f32],
) -> Result<()> {
    const OP: &str = "batchnorm_fold";
    if !valid_eps(eps) {
        return Err(Error::InvalidArgument {
            op: OP,
            msg: format!("eps must be positive and finite, got {eps}"),
        });
    }
    let c = p.gamma.len();
    check_channels(
        OP,
        c,
        &[
            p.beta.len(),
            running_mean.len(),
            running_var.len(),
            scale.len(),
            shift.len(),
        ],
    )?;
    for i in 0..c {
        let (s, b) = fold_one(p.gamma[i], p.beta[i], running_mean[i], running_var[i], eps);
        scale[i] = s;
        shift[i] = b;
    }
    Ok(())
}

fn fold_one(gamma: f32, beta: f32, mean: f32, var: f32, eps: f32) -> (f32, f32) {
    let inv = 1.0 / (f64::from(var) + f64::from(eps)).sqrt();
    let s = (f64::from(gamma) * inv) as f32;
    (s, beta - mean * s)
}

fn eval_impl(
    bn: &BatchNorm2d,
    p: BnAffine<'_>,
    running_mean: &[f32],
    running_var: &[f32],
    x: &[f32],
    y: &mut [f32],
    relu: bool,
) -> Result<()> {
    const OP: &str = "batchnorm_forward_eval";
    bn.check(OP, x.len(), y.len())?;
    check_channels(
        OP,
        bn.c,
        &[
            p.gamma.len(),
            p.beta.len(),
            running_mean.len(),
            running_var.len(),
        ],
    )?;
    for_planes(bn, x, y, |c, xp, yp, _| {
        let (s, _) = fold_one(
            p.gamma[c],
            p.beta[c],
            running_mean[c],
            running_var[c],
            bn.eps,
        );
        affine_plane(xp, None, yp, (running_mean[c], s, p.beta[c]), relu);
    });
    Ok(())
}

/// Eval forward with the running statistics: `y = (x - running_mean[c]) * scale[c] + beta[c]`
/// with `scale` as in [`batchnorm_fold`]. `momentum` is ignored.
///
/// # Errors
/// As [`batchnorm_forward_train`], except that `N*H*W == 1` is allowed.
pub fn batchnorm_forward_eval(
    bn: &BatchNorm2d,
    p: BnAffine<'_>,
    running_mean: &[f32],
    running_var: &[f32],
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    eval_impl(bn, p, running_mean, running_var, x, y, false)
}

/// [`batchnorm_forward_eval`] followed by ReLU.
///
/// # Errors
/// As [`batchnorm_forward_eval`].
pub fn batchnorm_relu_forward_eval(
    bn: &BatchNorm2d,
    p: BnAffine<'_>,
    running_mean: &[f32],
    running_var: &[f32],
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    eval_impl(bn, p, running_mean, running_var, x, y, true)
}

/// The fused ReLU's mask, recomputed: the forward's `t = (x - mean) * scale + beta` in the
/// same `f32` operations, so `t > 0` is exactly `y > 0` (NaN and -0 included).
#[derive(Clone, Copy, Debug)]
struct ReluMask {
    scale: f32,
    beta: f32,
}

impl ReluMask {
    #[inline(always)]
    fn keep(&self, v: f32, mean: f32) -> bool {
        (v - mean) * self.scale + self.beta > 0.0
    }
}

/// `(sum(dy'), sum(dy' * (x - mean)))` over one plane, `dy' = relu mask ? dy : 0`:
/// `f32x8` lanes over blocks of 256 elements, each block added into `f64`.
fn plane_grad_sums(dy: &[f32], x: &[f32], mask: Option<ReluMask>, mean: f32) -> (f64, f64) {
    const BLOCK: usize = 256;
    let vm = f32x8::splat(mean);
    let (mut s_dy, mut s_dyx) = (0.0f64, 0.0f64);
    for start in (0..dy.len()).step_by(BLOCK) {
        let end = (start + BLOCK).min(dy.len());
        let (mut a, mut b) = (f32x8::ZERO, f32x8::ZERO);
        let mut i = start;
        while i + 8 <= end {
            let mut d = lanes(&dy[i..i + 8]);
            let xc = lanes(&x[i..i + 8]) - vm;
            if let Some(m) = mask {
                let t = xc * f32x8::splat(m.scale) + f32x8::splat(m.beta);
                d = t.simd_gt(f32x8::ZERO).select(d, f32x8::ZERO);
            }
            a += d;
            b += d * xc;
            i += 8;
        }
        let (mut sa, mut sb) = (a.reduce_add(), b.reduce_add());
        for j in i..end {
            let d = match mask {
                Some(m) if !m.keep(x[j], mean) => 0.0,
                _ => dy[j],
            };
            sa += d;
            sb += d * (x[j] - mean);
        }
        s_dy += f64::from(sa);
        s_dyx += f64::from(sb);
    }
    (s_dy, s_dyx)
}

#[inline(always)]
fn lanes(s: &[f32]) -> f32x8 {
    let a: [f32; 8] = s.try_into().expect("8 lanes");
    f32x8::from(a)
}

/// The fused ReLU's mask of channel `c`, with `relu_beta` (else none).
fn relu_mask(
    gamma: &[f32],
    relu_beta: Option<&[f32]>,
    saved: &BnSaved,
    c: usize,
) -> Option<ReluMask> {
    relu_beta.map(|b| ReluMask {
        scale: gamma[c] * saved.inv_std[c],
        beta: b[c],
    })
}

/// The gradient the residual join `y = act(bn + addend)` passes to both addends, over one
/// plane: `y > 0 ? dy : 0` with the join's ReLU (`y` given), else `dy`; as
/// [`crate::kernels::elementwise::add_relu_backward`] computes it.
fn join_grad(y: Option<&[f32]>, dy: &[f32], g: &mut [f32]) {
    match y {
        Some(y) => {
            for ((o, &d), &v) in g.iter_mut().zip(dy).zip(y) {
                *o = if v > 0.0 { d } else { 0.0 };
            }
        }
        None => g.copy_from_slice(dy),
    }
}

/// Per channel `dbeta = sum(dy')`, `dgamma = sum(dy' * xhat)` from per-plane sums taken in
/// memory order and added in image order; `dy'` is `dy` masked by the fused ReLU (with
/// `relu_beta`). With `join = Some((y, g))`, `dy` is instead the gradient of a residual
/// join after the BatchNorm (`y` its output with a ReLU): the gradient it passes on
/// ([`join_grad`]) is written to `g` plane by plane and summed from there while the plane
/// sits in L1.
#[allow(clippy::too_many_arguments)]
fn grad_sums(
    bn: &BatchNorm2d,
    gamma: &[f32],
    relu_beta: Option<&[f32]>,
    saved: &BnSaved,
    x: &[f32],
    dy: &[f32],
    join: Option<(Option<&[f32]>, &mut [f32])>,
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    let hw = bn.h * bn.w;
    let (join_y, g) = match join {
        Some((y, g)) => (y, g),
        None => (None, &mut [][..]),
    };
    let part = |plane: usize, gp: &mut [f32], out: &mut [f64]| {
        let c = plane % bn.c;
        let r = plane * hw..(plane + 1) * hw;
        let d: &[f32] = if gp.is_empty() {
            &dy[r.clone()]
        } else {
            join_grad(join_y.map(|y| &y[r.clone()]), &dy[r.clone()], gp);
            gp
        };
        let mask = relu_mask(gamma, relu_beta, saved, c);
        let (a, b) = plane_grad_sums(d, &x[r], mask, saved.mean[c]);
        out.copy_from_slice(&[a, b]);
    };
    with_partials_writing(bn, 2, g, part, |sums| {
        dgamma
            .par_iter_mut()
            .zip(dbeta.par_iter_mut())
            .enumerate()
            .for_each(|(c, (dg, db))| {
                let (mut s_dy, mut s_dyx) = (0.0f64, 0.0f64);
                for n in 0..bn.n {
                    let plane = n * bn.c + c;
                    s_dy += sums[2 * plane];
                    s_dyx += sums[2 * plane + 1];
                }
                *db = s_dy as f32;
                *dg = (s_dyx * f64::from(saved.inv_std[c])) as f32;
            });
    });
}

/// `dx` from `dy` (masked by the fused ReLU with `relu_beta`), `x` and the per-channel
/// sums: `dbeta` and `dgamma` of [`grad_sums`], or the group's (`global`: per channel
/// `sum(dy)`, `sum(dy * xhat)`, and the group's `M`).
#[allow(clippy::too_many_arguments)]
fn input_grad(
    bn: &BatchNorm2d,
    gamma: &[f32],
    relu_beta: Option<&[f32]>,
    saved: &BnSaved,
    x: &[f32],
    dy: &[f32],
    (dgamma, dbeta): (&[f32], &[f32]),
    global: Option<(&[f64], f64)>,
    dx: &mut [f32],
) {
    let hw = bn.h * bn.w;
    let m = bn.per_channel() as f64;
    for_planes(bn, dy, dx, |c, dyp, dxp, plane| {
        let inv = f64::from(saved.inv_std[c]);
        let a = f64::from(gamma[c]) * inv;
        let (sum_dy, sum_dyxhat, m) = match global {
            Some((sums, m)) => (sums[2 * c], sums[2 * c + 1], m),
            None => (f64::from(dbeta[c]), f64::from(dgamma[c]), m),
        };
        // dx = a * dy - a * sum_dy / M - a * inv * sum_dyxhat / M * (x - mean)
        let k = (-a * inv * sum_dyxhat / m) as f32;
        let b = (-a * sum_dy / m) as f32;
        let (a, mean) = (a as f32, saved.mean[c]);
        let r = plane * hw..(plane + 1) * hw;
        let xp = &x[r];
        match relu_mask(gamma, relu_beta, saved, c) {
            Some(m) => {
                for ((o, &d), &v) in dxp.iter_mut().zip(dyp).zip(xp) {
                    let d = if m.keep(v, mean) { d } else { 0.0 };
                    *o = a * d + k * (v - mean) + b;
                }
            }
            None => {
                for ((o, &d), &v) in dxp.iter_mut().zip(dyp).zip(xp) {
                    *o = a * d + k * (v - mean) + b;
                }
            }
        }
    });
}

/// Checks the lengths of a training backward.
#[allow(clippy::too_many_arguments)]
fn check_backward(
    op: &'static str,
    bn: &BatchNorm2d,
    gamma: &[f32],
    saved: &BnSaved,
    x: &[f32],
    dy: &[f32],
    dgamma: usize,
    dbeta: usize,
) -> Result<()> {
    bn.check(op, x.len(), dy.len())?;
    check_channels(
        op,
        bn.c,
        &[
            gamma.len(),
            saved.mean.len(),
            saved.inv_std.len(),
            dgamma,
            dbeta,
        ],
    )
}

#[allow(clippy::too_many_arguments)]
fn backward_impl(
    bn: &BatchNorm2d,
    gamma: &[f32],
    relu_beta: Option<&[f32]>,
    saved: &BnSaved,
    x: &[f32],
    dy: &[f32],
    g: BnGrads<'_>,
    sync: Option<BnSync<'_>>,
) -> Result<()> {
    const OP: &str = "batchnorm_backward";
    check_backward(OP, bn, gamma, saved, x, dy, g.dgamma.len(), g.dbeta.len())?;
    check_len(OP, g.dx.len(), bn.len())?;
    if let Some(b) = relu_beta {
        check_len(OP, b.len(), bn.c)?;
    }
    grad_sums(bn, gamma, relu_beta, saved, x, dy, None, g.dgamma, g.dbeta);
    // dgamma and dbeta stay this process's (a data-parallel step sums the parameter
    // gradients afterwards); dx needs the sums over the whole group.
    let m = bn.per_channel() as f64;
    let global: Option<(&[f64], f64)> = match sync {
        None => None,
        Some(BnSync { buf, reduce, ranks }) => {
            check_len(OP, buf.len(), 2 * bn.c)?;
            for (c, o) in buf.chunks_exact_mut(2).enumerate() {
                o[0] = f64::from(g.dbeta[c]);
                o[1] = f64::from(g.dgamma[c]);
            }
            reduce(buf)?;
            Some((buf, m * ranks as f64))
        }
    };
    let sums = (&*g.dgamma, &*g.dbeta);
    input_grad(bn, gamma, relu_beta, saved, x, dy, sums, global, g.dx);
    Ok(())
}

/// Training backward: `dx`, `dgamma`, `dbeta` from `x`, `dy` and the state the training
/// forward saved.
///
/// # Errors
/// [`Error::ShapeMismatch`] on a wrong length.
pub fn batchnorm_backward(
    bn: &BatchNorm2d,
    gamma: &[f32],
    saved: &BnSaved,
    x: &[f32],
    dy: &[f32],
    grads: BnGrads<'_>,
) -> Result<()> {
    backward_impl(bn, gamma, None, saved, x, dy, grads, None)
}

/// Backward of [`batchnorm_relu_forward_train`]: `dy` is first masked by `y > 0`, where
/// `y` is that forward's output, recomputed from `x`, the affine parameters and `saved`
/// (which must be those of the forward) rather than read back.
///
/// # Errors
/// [`Error::ShapeMismatch`] on a wrong length.
pub fn batchnorm_relu_backward(
    bn: &BatchNorm2d,
    p: BnAffine<'_>,
    saved: &BnSaved,
    x: &[f32],
    dy: &[f32],
    grads: BnGrads<'_>,
) -> Result<()> {
    backward_impl(bn, p.gamma, Some(p.beta), saved, x, dy, grads, None)
}

/// The backward of [`batchnorm_forward_train_synced`] (`relu`: of its fused-ReLU form):
/// `dgamma` and `dbeta` of this process's batch (the step sums them over the group with the
/// other parameter gradients), `dx` with the per-channel sums of the whole group, gathered
/// through `sync` (`2 C` values: `sum(dy)`, `sum(dy * xhat)` per channel; see [`BnSync`]).
///
/// # Errors
/// As [`batchnorm_backward`]; a `sync.buf` that is not `2 C` long; the reduction's.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward_synced(
    bn: &BatchNorm2d,
    p: BnAffine<'_>,
    relu: bool,
    saved: &BnSaved,
    x: &[f32],
    dy: &[f32],
    grads: BnGrads<'_>,
    sync: BnSync<'_>,
) -> Result<()> {
    let relu_beta = relu.then_some(p.beta);
    backward_impl(bn, p.gamma, relu_beta, saved, x, dy, grads, Some(sync))
}

/// The first half of the backward of [`batchnorm_add_forward_train`]: from the join's
/// output gradient `dy` (and its output `y` with `relu`), writes the gradient both addends
/// receive, `g = y > 0 ? dy : 0` (`dy` without ReLU), to `g` (the addend's gradient, as
/// [`crate::kernels::elementwise::add_relu_backward`] would), and `dgamma`, `dbeta` from
/// `g` and `x` in the same pass (each plane of `g` summed while it sits in L1).
///
/// # Errors
/// [`Error::ShapeMismatch`] on a wrong length.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_add_backward_params(
    bn: &BatchNorm2d,
    gamma: &[f32],
    saved: &BnSaved,
    x: &[f32],
    y: Option<&[f32]>,
    dy: &[f32],
    g: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) -> Result<()> {
    const OP: &str = "batchnorm_add_backward";
    check_backward(OP, bn, gamma, saved, x, dy, dgamma.len(), dbeta.len())?;
    check_len(OP, g.len(), bn.len())?;
    if let Some(y) = y {
        check_len(OP, y.len(), bn.len())?;
    }
    grad_sums(bn, gamma, None, saved, x, dy, Some((y, g)), dgamma, dbeta);
    Ok(())
}

/// The second half of the backward of [`batchnorm_add_forward_train`]: `dx` from `x`, the
/// BatchNorm's output gradient `g` and the `dgamma`, `dbeta` that
/// [`batchnorm_add_backward_params`] wrote (the operations of [`batchnorm_backward`]).
///
/// # Errors
/// [`Error::ShapeMismatch`] on a wrong length.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_add_backward_input(
    bn: &BatchNorm2d,
    gamma: &[f32],
    saved: &BnSaved,
    x: &[f32],
    g: &[f32],
    dgamma: &[f32],
    dbeta: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    const OP: &str = "batchnorm_add_backward";
    check_backward(OP, bn, gamma, saved, x, g, dgamma.len(), dbeta.len())?;
    check_len(OP, dx.len(), bn.len())?;
    input_grad(bn, gamma, None, saved, x, g, (dgamma, dbeta), None, dx);
    Ok(())
}

/// The backward of [`batchnorm_add_forward_train`]: the addend's gradient `dadd` (written)
/// and the BatchNorm's `dx`, `dgamma`, `dbeta`, bit for bit those of
/// [`crate::kernels::elementwise::add_relu_backward`] (or a copy of `dy` without ReLU)
/// followed by [`batchnorm_backward`].
///
/// # Errors
/// [`Error::ShapeMismatch`] on a wrong length.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_add_backward(
    bn: &BatchNorm2d,
    gamma: &[f32],
    saved: &BnSaved,
    x: &[f32],
    y: Option<&[f32]>,
    dy: &[f32],
    dadd: &mut [f32],
    grads: BnGrads<'_>,
) -> Result<()> {
    let BnGrads { dx, dgamma, dbeta } = grads;
    batchnorm_add_backward_params(bn, gamma, saved, x, y, dy, dadd, dgamma, dbeta)?;
    batchnorm_add_backward_input(bn, gamma, saved, x, dadd, dgamma, dbeta, dx)
}
