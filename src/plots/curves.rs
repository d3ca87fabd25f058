//! Line plots with a legend (training curves and the like), drawn with plotters.

use std::ops::Range;
use std::path::Path;

use image::RgbImage;
use plotters::prelude::*;

use super::raster::{drawing_error, ensure_font, write_png, FONT};
use crate::{Error, Result};

/// Size in pixels of a curve plot.
const SIZE: (u32, u32) = (900, 560);

/// Line colour of series `i` is `SERIES_COLOURS[i % 10]`: matplotlib's "tab10" cycle
/// (blue, orange, green, red, purple, brown, pink, grey, olive, cyan).
pub const SERIES_COLOURS: [[u8; 3]; 10] = [
    [0x1f, 0x77, 0xb4],
    [0xff, 0x7f, 0x0e],
    [0x2c, 0xa0, 0x2c],
    [0xd6, 0x27, 0x28],
    [0x94, 0x67, 0xbd],
    [0x8c, 0x56, 0x4b],
    [0xe3, 0x77, 0xc2],
    [0x7f, 0x7f, 0x7f],
    [0xbc, 0xbd, 0x22],
    [0x17, 0xbe, 0xcf],
];

/// One named line of a plot: `(x, y)` points joined in the given order.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Name shown in the legend.
    pub name: String,
    /// The points; those with a non-finite coordinate (a NaN loss, say) are skipped.
    pub points: Vec<(f64, f64)>,
}

/// Saves a line plot of `series` (colours from [`SERIES_COLOURS`], a legend with their names) with the given
/// title and axis labels as a 900 x 560 PNG. The axes span the finite points, with 5% room.
/// A series of a single point is drawn as a dot. Written atomically.
///
/// Errors when `series` is empty or holds no finite point, or the file cannot be written.
pub fn save_curves(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    path: &Path,
) -> Result<()> {
    let finite = |s: &Series| {
        s.points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect::<Vec<_>>()
    };
    let lines: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|s| (s.name.as_str(), finite(s)))
        .collect();
    let all: Vec<(f64, f64)> = lines.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    if all.is_empty() {
        return Err(Error::config(format!(
            "nothing to plot in {}: {} series with no finite point; pass at least one series with a finite (x, y)",
            path.display(),
            series.len()
        )));
    }
    let x_range = padded_range(all.iter().map(|p| p.0));
    let y_range = padded_range(all.iter().map(|p| p.1));
    ensure_font()?;
    let err = |e| drawing_error(path, e);
    let mut buffer = vec![255u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, SIZE).into_drawing_area();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 24))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d(x_range, y_range)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 17))
            .draw()
            .map_err(err)?;
        for (i, (name, points)) in lines.iter().enumerate() {
            let [r, g, b] = SERIES_COLOURS[i % SERIES_COLOURS.len()];
            let colour = RGBColor(r, g, b);
            let dot = if points.len() == 1 { 3 } else { 0 };
            let line =
                LineSeries::new(points.iter().copied(), colour.stroke_width(2)).point_size(dot);
            chart
                .draw_series(line)
                .map_err(err)?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    let img = RgbImage::from_raw(SIZE.0, SIZE.1, buffer)
        .ok_or_else(|| drawing_error(path, "the plot buffer has the wrong size"))?;
    write_png(&img, path)
}

/// The span of `values` widened by 5% on each side (by 1 when all values are equal).
fn padded_range(values: impl Iterator<Item = f64>) -> Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let pad = if hi > lo { 0.05 * (hi - lo) } else { 1.0 };
    (lo - pad)..(hi + pad)
}
