//! How the cost of a training step grows: block-step time against hidden width and against the
//! number of series terms, one line per implementation, as a PNG for the README.
//!
//! The numbers come from `benches/compare --scaling`, which writes them as JSON
//! ([`ScalingTable`]); [`plot_scaling`] draws them.

use crate::{Error, Result};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One measured configuration of one implementation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingPoint {
    /// `genflow`, `pytorch-official`, `pytorch-tangent`, ...
    pub implementation: String,
    pub hidden: i64,
    pub terms: usize,
    /// Block-step milliseconds (median over the rounds and samples).
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// The scaling measurements: the sweep over hidden widths runs at `terms`, the sweep over term
/// counts at `hidden`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingTable {
    pub device: String,
    pub threads: i32,
    /// The term count of the hidden-width sweep.
    pub terms: usize,
    /// The hidden width of the term sweep.
    pub hidden: i64,
    pub points: Vec<ScalingPoint>,
}

impl ScalingTable {
    /// Reads a table written by `benches/compare --scaling`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| {
            Error::file(
                path,
                format!("not a scaling table written by benches/compare: {e}"),
            )
        })
    }

    fn implementations(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for p in &self.points {
            if !names.contains(&p.implementation) {
                names.push(p.implementation.clone());
            }
        }
        names
    }

    /// `(x, median, min, max)` of one implementation along one sweep, sorted by `x`.
    fn series(&self, implementation: &str, sweep: Sweep) -> Vec<(f64, f64, f64, f64)> {
        let mut out: Vec<(f64, f64, f64, f64)> = self
            .points
            .iter()
            .filter(|p| p.implementation == implementation)
            .filter_map(|p| {
                match sweep {
                    Sweep::Hidden if p.terms == self.terms => Some(p.hidden as f64),
                    Sweep::Terms if p.hidden == self.hidden => Some(p.terms as f64),
                    _ => None,
                }
                .map(|x| (x, p.median, p.min, p.max))
            })
            .collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }
}

#[derive(Debug, Clone, Copy)]
enum Sweep {
    Hidden,
    Terms,
}

const FONT: &str = "sans-serif";
const COLORS: [RGBColor; 5] = [
    RGBColor(0x1b, 0x6a, 0xc6),
    RGBColor(0xd9, 0x5f, 0x02),
    RGBColor(0x1b, 0x9e, 0x77),
    RGBColor(0x75, 0x70, 0xb3),
    RGBColor(0x66, 0x66, 0x66),
];

fn register_font() -> Result<()> {
    plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| Error::config("the bundled DejaVu Sans font could not be loaded"))
}

fn plot_error(e: impl std::fmt::Display) -> Error {
    Error::config(format!("drawing the scaling plot failed: {e}"))
}

/// Draws `table` as a PNG of two panels (ms against hidden width; ms against series terms), a line
/// per implementation through the medians, with min-max bars.
pub fn plot_scaling(table: &ScalingTable, out: &Path) -> Result<()> {
    register_font()?;
    let root = BitMapBackend::new(out, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let panels = root.split_evenly((1, 2));
    let names = table.implementations();
    let titles = [
        (
            Sweep::Hidden,
            format!("block-step vs hidden width ({} terms)", table.terms),
            "hidden width",
        ),
        (
            Sweep::Terms,
            format!("block-step vs series terms (hidden {})", table.hidden),
            "series terms",
        ),
    ];
    for (panel, (sweep, title, xlabel)) in panels.iter().zip(titles) {
        let all: Vec<(f64, f64, f64, f64)> =
            names.iter().flat_map(|n| table.series(n, sweep)).collect();
        if all.is_empty() {
            return Err(Error::config(format!(
                "scaling table has no points for the panel '{title}'"
            )));
        }
        let x_max = all.iter().map(|p| p.0).fold(0.0, f64::max) * 1.08;
        let y_max = all.iter().map(|p| p.3).fold(0.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(panel)
            .caption(&title, (FONT, 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc(xlabel)
            .y_desc(format!(
                "ms per step ({}, {} threads)",
                table.device, table.threads
            ))
            .label_style((FONT, 13))
            .draw()
            .map_err(plot_error)?;
        for (i, name) in names.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let points = table.series(name, sweep);
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|p| (p.0, p.1)),
                    color.stroke_width(2),
                ))
                .map_err(plot_error)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|p| Circle::new((p.0, p.1), 4, color.filled())),
                )
                .map_err(plot_error)?;
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|p| PathElement::new(vec![(p.0, p.2), (p.0, p.3)], color)),
                )
                .map_err(plot_error)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 14))
            .draw()
            .map_err(plot_error)?;
    }
    root.present().map_err(plot_error)?;
    Ok(())
}
