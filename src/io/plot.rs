//! The run's chart as a PNG, drawn with plotters into a buffer that `image` encodes: the
//! loss (left axis) and the learning rate (right axis) against the step, and below it the
//! monitor's accuracy against the epoch when the run has one. Text is set in the bundled
//! DejaVu Sans Mono (assets/fonts) through ab_glyph: no font file or library on the system.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

/// The font every label is set in.
const FONT: &str = "selfsup-mono";
static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSansMono.ttf");

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bundled file is a valid TrueType font; a failure would only leave labels out.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES);
    });
}

/// What a run's chart shows.
#[derive(Clone, Debug, Default)]
pub struct RunCurves {
    /// `(step, loss)` of every step (NaN points are skipped).
    pub loss: Vec<(f64, f64)>,
    /// `(step, learning rate)` of every step.
    pub lr: Vec<(f64, f64)>,
    /// `(epoch, accuracy in [0, 1])` of every monitor run.
    pub monitor: Vec<(f64, f64)>,
    /// The monitor's name (`kNN accuracy`), the lower panel's axis title.
    pub monitor_label: String,
}

/// `lo..hi` of the finite values, widened when empty or flat.
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 0.5 * lo.abs().max(1e-3), hi + 0.5 * hi.abs().max(1e-3));
    }
    let pad = 0.05 * (hi - lo);
    (lo - pad, hi + pad)
}

fn draw_err<E: std::error::Error>(e: E) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Draws `curves` as a `width x height` PNG at `path` (not atomically: the chart is
/// redrawn from `metrics.jsonl` whenever a run ends).
///
/// # Errors
/// Drawing or writing the file failed.
pub fn run_chart(path: &Path, curves: &RunCurves, width: u32, height: u32) -> std::io::Result<()> {
    register_font();
    let mut buf = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let has_monitor = !curves.monitor.is_empty();
        let (top, bottom) = if has_monitor {
            root.split_vertically(height * 62 / 100)
        } else {
            (root.clone(), root.clone())
        };
        let steps = curves.loss.iter().map(|p| p.0).fold(1.0f64, f64::max);
        let (lo, hi) = range(curves.loss.iter().map(|p| p.1));
        let (_, lr_hi) = range(curves.lr.iter().map(|p| p.1).chain([0.0]));
        let mut chart = ChartBuilder::on(&top)
            .caption("training loss and learning rate", (FONT, 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .right_y_label_area_size(72)
            .build_cartesian_2d(0.0..steps, lo..hi)
            .map_err(draw_err)?
            .set_secondary_coord(0.0..steps, 0.0..lr_hi);
        chart
            .configure_mesh()
            .x_desc("step")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc("loss")
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .draw()
            .map_err(draw_err)?;
        chart
            .configure_secondary_axes()
            .y_desc("learning rate")
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .draw()
            .map_err(draw_err)?;
        let blue = RGBColor(31, 119, 180);
        let orange = RGBColor(255, 127, 14);
        let loss = curves.loss.iter().copied().filter(|p| p.1.is_finite());
        chart
            .draw_series(LineSeries::new(loss, blue.stroke_width(1)))
            .map_err(draw_err)?
            .label("loss")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], blue));
        chart
            .draw_secondary_series(LineSeries::new(curves.lr.iter().copied(), orange))
            .map_err(draw_err)?
            .label("learning rate")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], orange));
        chart
            .configure_series_labels()
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(draw_err)?;
        if has_monitor {
            let epochs = curves.monitor.iter().map(|p| p.0).fold(1.0f64, f64::max);
            let green = RGBColor(44, 160, 44);
            let mut acc = ChartBuilder::on(&bottom)
                .margin(12)
                .margin_right(12 + 72)
                .x_label_area_size(40)
                .y_label_area_size(64)
                .build_cartesian_2d(0.0..epochs, 0.0..100.0)
                .map_err(draw_err)?;
            acc.configure_mesh()
                .x_desc("epoch")
                .y_label_formatter(&|y| format!("{y:.0}"))
                .y_desc(format!("{} (%)", curves.monitor_label))
                .label_style((FONT, 13))
                .axis_desc_style((FONT, 14))
                .draw()
                .map_err(draw_err)?;
            let points: Vec<(f64, f64)> = curves
                .monitor
                .iter()
                .map(|&(e, a)| (e, 100.0 * a))
                .collect();
            acc.draw_series(LineSeries::new(
                points.iter().copied(),
                green.stroke_width(2),
            ))
            .map_err(draw_err)?;
            acc.draw_series(points.iter().map(|&p| Circle::new(p, 3, green.filled())))
                .map_err(draw_err)?;
        }
        root.present().map_err(draw_err)?;
    }
    let img = image::RgbImage::from_raw(width, height, buf)
        .ok_or_else(|| std::io::Error::other("chart buffer of the wrong size"))?;
    write_png(path, &img)
}

/// Encodes `img` as PNG and writes it to `path` atomically (a temporary file renamed into
/// place), so a full disk leaves the previous file whole.
pub fn write_png(path: &Path, img: &image::RgbImage) -> std::io::Result<()> {
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(std::io::Error::other)?;
    crate::io::atomic::write_atomically(path, |w| w.write_all(&png)).map_err(|e| match e {
        crate::io::atomic::AtomicWriteError::Io { error, .. } => error,
        other => std::io::Error::other(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_pad_and_survive_flat_or_empty_data() {
        assert_eq!(range([].into_iter()), (0.0, 1.0));
        assert_eq!(range([f64::NAN].into_iter()), (0.0, 1.0));
        let (lo, hi) = range([2.0, 2.0].into_iter());
        assert!(lo < 2.0 && hi > 2.0);
        assert_eq!(range([0.0, 10.0, f64::INFINITY].into_iter()), (-0.5, 10.5));
    }
}
