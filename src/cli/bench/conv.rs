//! The convolution workloads of `selfsup bench`: a 3x3 convolution layer's forward pass,
//! input gradient and weight gradient (docs/performance.md).

use selfsup::kernels::conv::{
    conv2d_backward_input, conv2d_backward_weight, conv2d_forward, Conv2d,
};

use super::inputs::filled;
use super::workload::{Reference, Work, Workload};

/// The convolution workloads of docs/performance.md: 3x3, stride 1, padding 1,
/// `C_in = C_out`, batch 512 (two views of 256 images); one operation is the forward pass,
/// the input gradient and the weight gradient.
pub const CONV_LAYERS: &[(&str, usize, usize)] = &[
    ("conv_32x32_c32", 32, 32),
    ("conv_16x16_c64", 16, 64),
    ("conv_8x8_c128", 8, 128),
];

/// Images per convolution workload.
pub const CONV_BATCH: usize = 512;

/// The convolution workload of `batch` images `hw x hw` with `c` channels in and out.
pub fn conv_workload(name: &'static str, batch: usize, hw: usize, c: usize) -> Workload {
    let g = Conv2d::new(batch, c, hw, hw, c, 3, 1, 1);
    Workload {
        name,
        about: format!(
            "conv 3x3 s1 p1, {batch} x {c} x {hw} x {hw} -> {c} channels: forward + input \
             gradient + weight gradient"
        ),
        work: Work::Flops(3.0 * 2.0 * (batch * c * hw * hw * c * 9) as f64),
        references: &[Reference::Selfsup],
        setup: Box::new(move |_| {
            g.validate()?;
            let x = filled(g.x_len(), 0x5eed_0101);
            let w = filled(g.w_len(), 0x5eed_0102);
            let dy = vec![1.0f32; g.y_len()];
            let mut y = vec![0.0f32; g.y_len()];
            let mut dx = vec![0.0f32; g.x_len()];
            let mut dw = vec![0.0f32; g.w_len()];
            Ok(Box::new(move || {
                conv2d_forward(&g, &x, &w, None, false, &mut y)?;
                conv2d_backward_input(&g, &dy, &w, &mut dx)?;
                conv2d_backward_weight(&g, &x, &dy, &mut dw, false)?;
                Ok(())
            }))
        }),
    }
}
