//! A small line chart as a PNG (the loss curve of a run): axes, five ticks a side with
//! numeric labels in a built-in 3x5 pixel font (no font files, no system libraries), and
//! one or more series, each a polyline in its own colour, with NaN points skipped.

use image::{Rgb, RgbImage};
use std::path::Path;

/// 3x5 glyphs, one row of three bits per line (most significant bit left).
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c {
        '0' => [0b111, 0b101, 0b101, 0b101, 0b111],
        '1' => [0b010, 0b110, 0b010, 0b010, 0b111],
        '2' => [0b111, 0b001, 0b111, 0b100, 0b111],
        '3' => [0b111, 0b001, 0b111, 0b001, 0b111],
        '4' => [0b101, 0b101, 0b111, 0b001, 0b001],
        '5' => [0b111, 0b100, 0b111, 0b001, 0b111],
        '6' => [0b111, 0b100, 0b111, 0b101, 0b111],
        '7' => [0b111, 0b001, 0b010, 0b010, 0b010],
        '8' => [0b111, 0b101, 0b111, 0b101, 0b111],
        '9' => [0b111, 0b101, 0b111, 0b001, 0b111],
        '.' => [0b000, 0b000, 0b000, 0b000, 0b010],
        '-' => [0b000, 0b000, 0b111, 0b000, 0b000],
        'e' => [0b000, 0b111, 0b111, 0b100, 0b111],
        'k' => [0b100, 0b101, 0b110, 0b101, 0b101],
        ' ' => [0; 5],
        _ => return None,
    })
}

const SCALE: u32 = 2;

fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, colour: Rgb<u8>) {
    for (k, c) in s.chars().enumerate() {
        let Some(g) = glyph(c) else { continue };
        for (row, bits) in g.iter().enumerate() {
            for col in 0..3 {
                if bits & (0b100 >> col) != 0 {
                    for dy in 0..SCALE {
                        for dx in 0..SCALE {
                            put(
                                img,
                                x + (k as i64 * 4 + col) * SCALE as i64 + dx as i64,
                                y + row as i64 * SCALE as i64 + dy as i64,
                                colour,
                            );
                        }
                    }
                }
            }
        }
    }
}

fn text_width(s: &str) -> i64 {
    (s.chars().count() as i64 * 4 - 1) * SCALE as i64
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

/// Bresenham's line.
fn line(img: &mut RgbImage, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb<u8>) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    loop {
        put(img, x, y, c);
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

/// A tick label: short and readable (`1.5`, `0.02`, `12k`, `1e-5`).
fn label(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into()
    } else if a >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .into()
    } else if a >= 0.01 {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .into()
    } else {
        format!("{v:.0e}")
    }
}

/// The series' colours, in order.
const COLOURS: [Rgb<u8>; 4] = [
    Rgb([31, 119, 180]),
    Rgb([214, 39, 40]),
    Rgb([44, 160, 44]),
    Rgb([148, 103, 189]),
];

/// Draws the `series` (each a list of `(x, y)` points) into a `width x height` PNG at
/// `path`. An empty chart (no finite point) still draws its axes.
///
/// # Errors
/// The image encoder's or the file system's.
pub fn line_chart(
    path: &Path,
    series: &[&[(f64, f64)]],
    width: u32,
    height: u32,
) -> image::ImageResult<()> {
    let mut img = RgbImage::from_pixel(width.max(120), height.max(80), Rgb([255, 255, 255]));
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    let (left, right, top, bottom) = (60i64, w - 15, 15i64, h - 30);
    let finite = series
        .iter()
        .flat_map(|s| s.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in finite {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-12 {
        (y0, y1) = (y0 - 0.5, y1 + 0.5);
    }
    let pad = (y1 - y0) * 0.05;
    let (y0, y1) = (y0 - pad, y1 + pad);
    let px = |x: f64| left + ((x - x0) / (x1 - x0) * (right - left) as f64).round() as i64;
    let py = |y: f64| bottom - ((y - y0) / (y1 - y0) * (bottom - top) as f64).round() as i64;
    let (axis, grid, ink) = (Rgb([0, 0, 0]), Rgb([225, 225, 225]), Rgb([60, 60, 60]));
    for k in 0..=4 {
        let f = f64::from(k) / 4.0;
        let (gx, gy) = (x0 + f * (x1 - x0), y0 + f * (y1 - y0));
        line(&mut img, (px(gx), top), (px(gx), bottom), grid);
        line(&mut img, (left, py(gy)), (right, py(gy)), grid);
        let lx = label(gx);
        text(&mut img, px(gx) - text_width(&lx) / 2, bottom + 8, &lx, ink);
        let ly = label(gy);
        text(&mut img, left - 6 - text_width(&ly), py(gy) - 5, &ly, ink);
    }
    line(&mut img, (left, top), (left, bottom), axis);
    line(&mut img, (left, bottom), (right, bottom), axis);
    for (s, colour) in series.iter().zip(COLOURS.iter().cycle()) {
        let mut prev: Option<(i64, i64)> = None;
        for &(x, y) in s.iter() {
            if !(x.is_finite() && y.is_finite()) {
                prev = None;
                continue;
            }
            let p = (px(x), py(y));
            match prev {
                Some(q) => line(&mut img, q, p, *colour),
                None => put(&mut img, p.0, p.1, *colour),
            }
            prev = Some(p);
        }
    }
    img.save_with_format(path, image::ImageFormat::Png)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_short() {
        assert_eq!(label(0.0), "0");
        assert_eq!(label(1.5), "1.5");
        assert_eq!(label(2.0), "2");
        assert_eq!(label(0.25), "0.25");
        assert_eq!(label(250.0), "250");
        assert_eq!(label(12_000.0), "12k");
        assert_eq!(label(0.00001), "1e-5");
        for v in [0.0, 1.5, 0.25, 250.0, 12_000.0, 0.00001, -3.5] {
            assert!(label(v).chars().all(|c| glyph(c).is_some()), "{v}");
        }
    }

    #[test]
    fn draws_a_curve_and_survives_degenerate_input() {
        let dir = std::env::temp_dir().join(format!("selfsup-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.png");
        let pts: Vec<(f64, f64)> = (0..100)
            .map(|i| (f64::from(i), (-f64::from(i) / 30.0).exp()))
            .collect();
        line_chart(&p, &[&pts], 400, 250).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (400, 250));
        // The series colour appears.
        assert!(img.pixels().any(|px| *px == COLOURS[0]));
        for s in [vec![], vec![(1.0, f64::NAN)], vec![(3.0, 2.0)]] {
            line_chart(&p, &[&s], 50, 50).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
