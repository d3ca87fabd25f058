//! Line plots with a legend (training curves and the like), drawn with plotters.

use std::ops::Range;
use std::path::Path;

use image::RgbImage;
use plotters::coord::ranged1d::ValueFormatter;
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

/// The finite points of each named line of a panel.
type Lines<'a> = Vec<(&'a str, Vec<(f64, f64)>)>;

/// A panel of a curves figure: its title, its y-axis label and its lines. Its y axis is
/// logarithmic when every finite value is positive and they span two decades or more.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    pub title: String,
    pub y_label: String,
    pub series: Vec<Series>,
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
    let panel = Panel {
        title: title.to_string(),
        y_label: y_label.to_string(),
        series: series.to_vec(),
    };
    save_panels(x_label, &[panel], path)
}

/// Saves one figure with a panel per quantity (two panels a row, each with its own y axis, a
/// logarithmic one where the values span decades) as a PNG: 900 x 560 for one panel, 600 x 420 per
/// panel otherwise. Written atomically.
///
/// Errors when there is no panel, a panel holds no finite point, or the file cannot be written.
pub fn save_panels(x_label: &str, panels: &[Panel], path: &Path) -> Result<()> {
    let lines: Vec<Lines> = panels
        .iter()
        .map(|p| {
            p.series
                .iter()
                .map(|s| (s.name.as_str(), finite_points(s)))
                .collect()
        })
        .collect();
    for (panel, lines) in panels.iter().zip(&lines) {
        if lines.iter().all(|(_, p)| p.is_empty()) {
            return Err(Error::config(format!(
                "nothing to plot in {} ({}): {} series with no finite point; pass at least one series with a finite (x, y)",
                path.display(),
                panel.title,
                panel.series.len()
            )));
        }
    }
    if panels.is_empty() {
        return Err(Error::config(format!(
            "no panel to plot in {}",
            path.display()
        )));
    }
    let cols = panels.len().min(2) as u32;
    let rows = panels.len().div_ceil(2) as u32;
    let size = if panels.len() == 1 {
        SIZE
    } else {
        (cols * 600, rows * 420)
    };
    ensure_font()?;
    let err = |e: String| drawing_error(path, e);
    let mut buffer = vec![255u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, size).into_drawing_area();
        let areas = root.split_evenly((rows as usize, cols as usize));
        for ((panel, lines), area) in panels.iter().zip(&lines).zip(&areas) {
            draw_panel(area, panel, x_label, lines).map_err(err)?;
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    let img = RgbImage::from_raw(size.0, size.1, buffer)
        .ok_or_else(|| drawing_error(path, "the plot buffer has the wrong size"))?;
    write_png(&img, path)
}

/// The finite points of a series.
fn finite_points(s: &Series) -> Vec<(f64, f64)> {
    s.points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect()
}

/// Whether a panel of these values gets a logarithmic y axis: when they are all positive and
/// span at least two decades (non-finite values are ignored).
pub fn spans_decades(values: impl Iterator<Item = f64>) -> bool {
    let values = values.filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    lo > 0.0 && hi.is_finite() && hi / lo >= 100.0
}

/// One panel: its title, axes (the y axis logarithmic where the values span decades), lines and
/// legend.
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
    x_label: &str,
    lines: &[(&str, Vec<(f64, f64)>)],
) -> std::result::Result<(), String> {
    let all: Vec<(f64, f64)> = lines.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    let x_range = padded_range(all.iter().map(|p| p.0));
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&panel.title, (FONT, 22))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(78);
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    if spans_decades(all.iter().map(|p| p.1)) {
        let (lo, hi) = all.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
        let chart = builder
            .build_cartesian_2d(x_range, (lo / 1.5..hi * 1.5).log_scale())
            .map_err(e)?;
        draw_lines(chart, x_label, &format!("{} (log)", panel.y_label), lines)
    } else {
        let chart = builder
            .build_cartesian_2d(x_range, padded_range(all.iter().map(|p| p.1)))
            .map_err(e)?;
        draw_lines(chart, x_label, &panel.y_label, lines)
    }
}

/// The mesh, the lines in [`SERIES_COLOURS`] and the legend of a built chart.
fn draw_lines<'a, DB, Y>(
    mut chart: ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    x_label: &str,
    y_label: &str,
    lines: &[(&str, Vec<(f64, f64)>)],
) -> std::result::Result<(), String>
where
    DB: DrawingBackend + 'a,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&|v| tick_label(*v))
        .y_label_formatter(&|v| tick_label(*v))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .draw()
        .map_err(e)?;
    for (i, (name, points)) in lines.iter().enumerate() {
        let [r, g, b] = SERIES_COLOURS[i % SERIES_COLOURS.len()];
        let colour = RGBColor(r, g, b);
        let dot = if points.len() == 1 { 3 } else { 0 };
        let line = LineSeries::new(points.iter().copied(), colour.stroke_width(2)).point_size(dot);
        chart
            .draw_series(line)
            .map_err(e)?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3))
            });
    }
    if lines.len() > 1 {
        chart
            .configure_series_labels()
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
    }
    Ok(())
}

/// A short axis label: 4 significant digits, in scientific notation for very small or large values.
fn tick_label(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{v:.2e}")
    } else {
        let text = format!("{v:.4}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        if text.is_empty() || text == "-" {
            "0".into()
        } else {
            text.to_string()
        }
    }
}

/// The span of `values` widened by 5% on each side (by 1 when all values are equal).
fn padded_range(values: impl Iterator<Item = f64>) -> Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let pad = if hi > lo { 0.05 * (hi - lo) } else { 1.0 };
    (lo - pad)..(hi + pad)
}
