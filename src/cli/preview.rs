//! `selfsup preview`: a PNG grid of original images and their augmented views, so users
//! see what their augmentation settings do before they train.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use image::{Rgb, RgbImage};

use selfsup::data::augment::{augment_view, view_rng, AugmentScratch, SimclrAugment};
use selfsup::data::resize::eval_view;

use super::data::{load_splits, parse_image_size};
use super::pretrain::{parse_crop_min, parse_strength};

const EXAMPLES: &str = "\
Examples:
  selfsup preview --data builtin --out grid.png
  selfsup preview --data fashion-mnist --images 6 --views 8 --strength 0.5 --out fm.png

Each row is one training image: on the left (framed) as the probe and `embed` see it (the
shorter side resized to --image-size, the central square), then --views augmented views
drawn exactly as pretraining draws them for epoch --epoch and seed --seed.";

/// Options of `selfsup preview`.
#[derive(Debug, Clone, Args)]
#[command(after_long_help = EXAMPLES)]
pub struct PreviewArgs {
    /// The data (see `selfsup pretrain --help`)
    #[arg(long, value_name = "SPEC", default_value = "builtin")]
    pub data: String,

    /// The PNG to write
    #[arg(long, value_name = "FILE", default_value = "preview.png")]
    pub out: PathBuf,

    /// Images (rows)
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub images: u64,

    /// Augmented views per image (columns after the original)
    #[arg(long, value_name = "N", default_value_t = 6, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub views: u64,

    /// Colour-jitter strength s, 0 to 2.5 (pretrain's quick recipe: 0.5)
    #[arg(long, value_name = "S", default_value_t = 0.5, value_parser = parse_strength, allow_negative_numbers = true)]
    pub strength: f32,

    /// Smallest crop, as a fraction of the image's area (pretrain's quick recipe: 0.3;
    /// --recipe paper: 0.08)
    #[arg(long, value_name = "FRACTION", default_value_t = 0.3, value_parser = parse_crop_min, allow_negative_numbers = true)]
    pub crop_min: f32,

    /// Side of the views, in pixels (as `pretrain --image-size`) [default: the data's own
    /// size; 96 for a folder]
    #[arg(long, value_name = "S", value_parser = parse_image_size, allow_negative_numbers = true)]
    pub image_size: Option<usize>,

    /// Seed (as `pretrain --seed` draws the views)
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,

    /// Epoch whose views to draw
    #[arg(long, value_name = "E", default_value_t = 0)]
    pub epoch: u64,

    /// Pixels per image pixel in the PNG
    #[arg(long, value_name = "K", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub zoom: u64,
}

/// Runs `selfsup preview`.
pub fn run(args: &PreviewArgs) -> Result<()> {
    let (splits, size) = load_splits(&args.data, args.image_size)?;
    let set = &*splits.train;
    let c = set.channels;
    let mut cfg = SimclrAugment::for_image(size, c, args.strength);
    cfg.crop_scale.0 = args.crop_min;
    cfg.validate()?;
    let rows = (args.images as usize).min(set.n);
    let cols = 1 + args.views as usize;
    let zoom = args.zoom as usize;
    let side = cfg.out_size;
    let (cell, gap) = (side * zoom, 4usize);
    let mut img = RgbImage::from_pixel(
        (cols * (cell + gap) + gap) as u32,
        (rows * (cell + gap) + gap) as u32,
        Rgb([255, 255, 255]),
    );
    let mut scratch = AugmentScratch::new();
    let mut view = vec![0.0f32; cfg.view_len(c)];
    let mut original = vec![0.0f32; cfg.view_len(c)];
    for r in 0..rows {
        // Images spread over the set, not just its first few.
        let i = r * set.n / rows;
        let y0 = gap + r * (cell + gap);
        // The original as the probe sees it: the evaluation view at the training size.
        eval_view(set.image(i), side, &mut original, &mut scratch.resize);
        draw(&mut img, &original, c, side, side, zoom, gap, y0);
        // Frame the original.
        for k in 0..cell + 2 {
            for (x, y) in [
                (gap + k - 1, y0 - 1),
                (gap + k - 1, y0 + cell),
                (gap - 1, y0 + k - 1),
                (gap + cell, y0 + k - 1),
            ] {
                if (x as u32) < img.width() && (y as u32) < img.height() {
                    img.put_pixel(x as u32, y as u32, Rgb([40, 40, 40]));
                }
            }
        }
        for v in 0..args.views as usize {
            let mut rng = view_rng(args.seed, args.epoch, i, v);
            let im = set.image(i);
            augment_view(
                im.pixels,
                c,
                im.height,
                im.width,
                &cfg,
                &mut rng,
                &mut view,
                &mut scratch,
            )?;
            let x0 = gap + (v + 1) * (cell + gap);
            draw(&mut img, &view, c, side, side, zoom, x0, y0);
        }
    }
    selfsup::io::plot::write_png(&args.out, &img)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "{}: {rows} images of {} with {} views each",
        args.out.display(),
        args.data,
        args.views
    );
    Ok(())
}

/// Draws a CHW image in [0, 1] at `(x0, y0)`, each pixel a `zoom x zoom` block.
#[allow(clippy::too_many_arguments)]
fn draw(
    img: &mut RgbImage,
    src: &[f32],
    c: usize,
    h: usize,
    w: usize,
    zoom: usize,
    x0: usize,
    y0: usize,
) {
    let plane = h * w;
    let byte = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    for y in 0..h {
        for x in 0..w {
            let p = y * w + x;
            let px = if c >= 3 {
                Rgb([byte(src[p]), byte(src[plane + p]), byte(src[2 * plane + p])])
            } else {
                let g = byte(src[p]);
                Rgb([g, g, g])
            };
            for dy in 0..zoom {
                for dx in 0..zoom {
                    img.put_pixel((x0 + x * zoom + dx) as u32, (y0 + y * zoom + dy) as u32, px);
                }
            }
        }
    }
}
