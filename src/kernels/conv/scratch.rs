//! How much per-thread scratch the convolution passes of a geometry grow to, for a memory
//! estimate before a graph is built: the same sizes the strategies ask [`super::with_scratch`]
//! for (`direct/forward.rs`, `direct/weight_grad.rs`, `im2col/forward.rs`, `flipped.rs`,
//! `polyphase.rs`, `col2im.rs`, `pointwise_strided.rs`, `winograd/`), summed over the
//! buffers of a forward, a weight gradient and an input gradient. Saturating, never
//! overflowing.

use super::{images_per_group, Conv2d, Conv2dImpl, InputGradImpl, GROUP_COLS};

/// Scratch in `f32`s (or `usize`s counted as two): what the calling thread holds once, and
/// what every thread of the pool may hold.
#[derive(Clone, Copy, Default)]
struct Floats {
    once: usize,
    per_thread: usize,
}

impl Floats {
    fn plus(self, o: Floats) -> Floats {
        Floats {
            once: self.once.saturating_add(o.once),
            per_thread: self.per_thread.saturating_add(o.per_thread),
        }
    }
}

/// Bytes of per-thread scratch a training step's passes of `g` (forward, weight gradient,
/// input gradient) leave allocated on a pool of `threads` threads; an estimate (an upper
/// bound per buffer: every worker is counted as holding the largest group). The buffers
/// are reused from one convolution to the next, so a graph takes the largest geometry's.
pub fn scratch_bytes(g: &Conv2d, threads: usize) -> usize {
    let f = forward(g).plus(weight_grad(g)).plus(input_grad(g));
    f.once
        .saturating_add(f.per_thread.saturating_mul(threads.max(1)))
        .saturating_mul(4)
}

fn forward(g: &Conv2d) -> Floats {
    #[cfg(target_arch = "x86_64")]
    if super::winograd::applies(g) {
        // WU (the transformed weights) once; WV, WM (a group's transformed input and
        // products) and WEO per thread.
        let lay = super::winograd::Layout::of(g);
        return Floats {
            once: lay.u_len(g),
            per_thread: lay
                .v_len()
                .saturating_add(lay.m_len())
                .saturating_add(lay.eo_len),
        };
    }
    let hw = g.out_h().saturating_mul(g.out_w());
    match Conv2dImpl::choose(g) {
        #[cfg(target_arch = "x86_64")]
        Conv2dImpl::DirectAvx512 => direct_forward(g, 32),
        #[cfg(target_arch = "x86_64")]
        Conv2dImpl::DirectAvx2 => direct_forward(g, 16),
        // A group's output goes through OUT (Cout x group*HoWo) when it has several images.
        Conv2dImpl::Im2col => Floats {
            once: 0,
            per_thread: g
                .c_out
                .saturating_mul((GROUP_COLS / hw.max(1)).clamp(1, g.n.max(1)))
                .saturating_mul(hw),
        },
        Conv2dImpl::PointwiseStrided => pointwise_strided(g, 0),
    }
}

/// Pass `pass` (forward, weight gradient, input gradient) of `pointwise_strided.rs`.
fn pointwise_strided(g: &Conv2d, pass: usize) -> Floats {
    let s = &super::pointwise_strided::scratch(g)[pass];
    Floats {
        once: s.once,
        per_thread: s.per_thread,
    }
}

/// WPANELS (the weights in `l`-channel panels) and OFFSETS once; PADDED (a group's padded
/// images) and FWD_PIXELS per thread.
#[cfg(target_arch = "x86_64")]
fn direct_forward(g: &Conv2d, l: usize) -> Floats {
    use super::direct::{GROUP_BYTES, MIN_GROUPS};
    let ps = padded_len(g);
    let gn = images_per_group(g.n, GROUP_BYTES, ps.saturating_mul(4), MIN_GROUPS);
    let npix = gn.saturating_mul(g.out_h() * g.out_w());
    Floats {
        once: g
            .c_out
            .div_ceil(l)
            .saturating_mul(l)
            .saturating_mul(g.depth())
            .saturating_add(2 * g.depth()),
        per_thread: gn.saturating_mul(ps).saturating_add(2 * npix),
    }
}

/// Floats of one zero-padded input image, its rows rounded up to whole column phases (the
/// row tiles split a padded row of width `Wp` into `sx` phases of `ceil(Wp / sx)`).
fn padded_len(g: &Conv2d) -> usize {
    let hp = g.h + 2 * g.pad.0;
    let wp = (g.w + 2 * g.pad.1).div_ceil(g.stride.1.max(1)) * g.stride.1.max(1);
    g.c_in.saturating_mul(hp).saturating_mul(wp)
}

fn weight_grad(g: &Conv2d) -> Floats {
    #[cfg(target_arch = "x86_64")]
    if super::winograd::weight_grad_applies(g) {
        // WDU (one partial dU per chunk) once; WVT, WZ (a group's transposed input transform
        // and output gradient transform), WSTAGE and WEO per thread.
        let wl = super::winograd::WgradLayout::of(g);
        return Floats {
            once: wl.chunks.saturating_mul(wl.du_len()),
            per_thread: wl
                .vt_len()
                .saturating_add(wl.z_len())
                .saturating_add(wl.stage_len())
                .saturating_add(wl.eo_len()),
        };
    }
    match Conv2dImpl::choose(g) {
        #[cfg(target_arch = "x86_64")]
        Conv2dImpl::DirectAvx512 => direct_weight_grad(g, 8, 32),
        #[cfg(target_arch = "x86_64")]
        Conv2dImpl::DirectAvx2 => direct_weight_grad(g, 6, 16),
        // One GEMM: its packing buffers only.
        Conv2dImpl::Im2col => Floats::default(),
        Conv2dImpl::PointwiseStrided => pointwise_strided(g, 1),
    }
}

/// TILES (one partial `dW` per chunk) and OFFSETS once; PADDED, DYT (a group's `dY` in
/// panels) and PIXELS per thread.
#[cfg(target_arch = "x86_64")]
fn direct_weight_grad(g: &Conv2d, r: usize, l: usize) -> Floats {
    use super::direct::{WGRAD_CHUNKS, WGRAD_GROUP_BYTES};
    let hw = g.out_h() * g.out_w();
    let ps = padded_len(g);
    let lanes = g.c_out.div_ceil(l).saturating_mul(l);
    let per_image = ps
        .saturating_add(lanes.saturating_mul(hw))
        .saturating_mul(4);
    let gn = images_per_group(g.n, WGRAD_GROUP_BYTES, per_image, WGRAD_CHUNKS);
    let chunks = g.n.div_ceil(gn).min(WGRAD_CHUNKS);
    let acc_len = g
        .depth()
        .div_ceil(r)
        .saturating_mul(r)
        .saturating_mul(lanes);
    let npix = gn.saturating_mul(hw);
    Floats {
        once: chunks.saturating_mul(acc_len).saturating_add(2 * g.depth()),
        per_thread: gn
            .saturating_mul(ps)
            .saturating_add(lanes.saturating_mul(npix))
            .saturating_add(2 * npix),
    }
}

fn input_grad(g: &Conv2d) -> Floats {
    match InputGradImpl::choose(g) {
        InputGradImpl::PointwiseStrided => pointwise_strided(g, 2),
        // FLIPPED (the flipped kernel) once, then the forward of the transposed geometry.
        InputGradImpl::Flipped => {
            let t = Conv2d {
                n: g.n,
                c_in: g.c_out,
                h: g.out_h(),
                w: g.out_w(),
                c_out: g.c_in,
                stride: (1, 1),
                pad: (g.kh - 1 - g.pad.0, g.kw - 1 - g.pad.1),
                ..*g
            };
            Floats {
                once: g.w_len(),
                per_thread: 0,
            }
            .plus(forward(&t))
        }
        #[cfg(target_arch = "x86_64")]
        InputGradImpl::PolyphaseAvx512 => polyphase_input_grad(g, 32),
        #[cfg(target_arch = "x86_64")]
        InputGradImpl::PolyphaseAvx2 => polyphase_input_grad(g, 16),
        // COLS: dcol of a group of about GROUP_COLS columns, per thread.
        InputGradImpl::Col2im => {
            let hw = g.out_h().saturating_mul(g.out_w());
            let gn = (GROUP_COLS / hw.max(1)).clamp(1, g.n.max(1));
            Floats {
                once: 0,
                per_thread: g.depth().saturating_mul(gn).saturating_mul(hw),
            }
        }
    }
}

/// PP_WEIGHTS (the weights in `l`-lane panels of input channels) and PP_OFFSETS once;
/// PP_PADDED (a group's padded `dY`) and PP_STAGE (a block of rows, `l` channels) per thread.
#[cfg(target_arch = "x86_64")]
fn polyphase_input_grad(g: &Conv2d, l: usize) -> Floats {
    use super::polyphase::{axes, block_rows, group_images};
    let (ay, ax) = axes(g);
    let taps = g.c_out.saturating_mul(g.kh * g.kw);
    let ps = g.c_out.saturating_mul(ay.padded).saturating_mul(ax.padded);
    let gn = group_images(g, ps);
    Floats {
        once: g
            .c_in
            .div_ceil(l)
            .saturating_mul(l)
            .saturating_mul(taps)
            .saturating_add(2 * taps),
        per_thread: gn
            .saturating_mul(ps)
            .saturating_add(l.saturating_mul(block_rows(g.w)).saturating_mul(g.w)),
    }
}
