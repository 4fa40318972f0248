//! The input gradient of a stride-1 convolution (padding below the kernel size) as its
//! transposed convolution: a forward convolution of `dY` with the kernel flipped in space and
//! transposed in channels, padded by `K - 1 - p`, run by the forward strategy its own
//! geometry chooses.

use crate::error::Result;
use crate::kernels::conv::{conv2d_forward, with_scratch, Conv2d};
use std::cell::RefCell;

thread_local! {
    static FLIPPED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The input gradient of
/// [`conv2d_backward_input`](crate::kernels::conv::conv2d_backward_input) for stride 1 and
/// padding below the kernel size (arguments checked, `N > 0`).
pub(super) fn input_grad(g: &Conv2d, dy: &[f32], w: &[f32], dx: &mut [f32]) -> Result<()> {
    let (ho, wo) = (g.out_h(), g.out_w());
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
    with_scratch(&FLIPPED, g.w_len(), |wf| {
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
    })
}
