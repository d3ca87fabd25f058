//! Pictures of 2-D densities: a model's density next to a histogram of the data, and a histogram
//! of samples alone.

use std::path::Path;

use tch::{Device, Kind, Tensor};

use super::raster::{heat_panel, save_heat_panels};
use crate::{Error, Result};

/// Grid points handed to the model's log-density per call.
const CHUNK: usize = 4096;
/// Bins per side of the histogram drawn by [`save_scatter_histogram`].
const SCATTER_BINS: usize = 128;
/// Largest grid resolution accepted (the picture and the model evaluation grow as its square).
const MAX_RESOLUTION: usize = 2048;

/// Saves a PNG with two panels over the window `[-range, range]^2`, with axes and colour bars:
/// left, titled "model density", a heat map of `exp(log_density)` on the centres of a
/// `resolution x resolution` grid; right, titled "data", a 2-D histogram of `data` `[n, 2]` with the
/// same cells. Both are scaled to their own maximum and coloured with viridis (dark = 0, yellow =
/// maximum; the colour bars give the values); `y` points up.
///
/// `log_density` is called on chunks of grid points, f32 `[m, 2]` on the CPU (move them to the
/// model's device yourself), and must return `m` values (any shape, device and float dtype).
/// `-inf` (zero density) is fine; NaN or `+inf` is an error ([`Error::NonFinite`]).
/// Data points outside the window or with NaN coordinates are left out of the histogram.
/// Written atomically.
pub fn save_density_comparison(
    log_density: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    data: &Tensor,
    range: f64,
    resolution: usize,
    path: &Path,
) -> Result<()> {
    check_window(range, resolution, path)?;
    let (density, max_log_p) = model_density(log_density, range, resolution, path)?;
    let counts = histogram(data, range, resolution, path)?;
    let panels = [
        heat_panel(
            "model density",
            &density,
            resolution,
            max_log_p.exp(),
            "density",
        ),
        heat_panel("data", &counts, resolution, 1.0, "points per cell"),
    ];
    save_heat_panels(&panels, range, path)
}

/// Saves a PNG, titled "samples", of a 2-D histogram of `points` `[n, 2]` with 128 x 128 cells over
/// `[-range, range]^2`, with axes and a colour bar, coloured like [`save_density_comparison`]'s.
/// Written atomically.
pub fn save_scatter_histogram(points: &Tensor, range: f64, path: &Path) -> Result<()> {
    check_window(range, SCATTER_BINS, path)?;
    let counts = histogram(points, range, SCATTER_BINS, path)?;
    let panel = heat_panel("samples", &counts, SCATTER_BINS, 1.0, "points per cell");
    save_heat_panels(&[panel], range, path)
}

/// Checks that `range` is positive and finite and `resolution` in `2..=MAX_RESOLUTION`.
fn check_window(range: f64, resolution: usize, path: &Path) -> Result<()> {
    if !(range.is_finite() && range > 0.0) {
        return Err(Error::config(format!(
            "the plot range must be positive and finite, got {range} (for {})",
            path.display()
        )));
    }
    if !(2..=MAX_RESOLUTION).contains(&resolution) {
        return Err(Error::config(format!(
            "the grid resolution must be in 2..={MAX_RESOLUTION}, got {resolution} (for {})",
            path.display()
        )));
    }
    Ok(())
}

/// Width of one of the `resolution` cells across `[-range, range]`.
fn cell_width(range: f64, resolution: usize) -> f64 {
    2.0 * range / resolution as f64
}

/// Centres `(x, y)` of the grid cells, flattened row-major with row 0 at the top:
/// `x_c = -range + (c + 1/2) w`, `y_r = range - (r + 1/2) w`.
fn cell_centres(range: f64, resolution: usize) -> Vec<f32> {
    let w = cell_width(range, resolution);
    let centre = |i: usize| (i as f64 + 0.5) * w;
    (0..resolution * resolution)
        .flat_map(|i| {
            [
                (-range + centre(i % resolution)) as f32,
                (range - centre(i / resolution)) as f32,
            ]
        })
        .collect()
}

/// `exp(log p - max log p)` on the grid cells and `max log p`, calling `log_density` on chunks of
/// centres.
fn model_density(
    log_density: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    range: f64,
    resolution: usize,
    path: &Path,
) -> Result<(Vec<f64>, f64)> {
    let mut log_p = Vec::with_capacity(resolution * resolution);
    for chunk in cell_centres(range, resolution).chunks(2 * CHUNK) {
        let m = chunk.len() / 2;
        let out = log_density(&Tensor::f_from_slice(chunk)?.f_reshape([m as i64, 2])?)?;
        if out.numel() != m {
            return Err(Error::shape(format!(
                "the log-density returned a tensor of shape {:?} for {m} points; it must return one value per point (for {})",
                out.size(),
                path.display()
            )));
        }
        log_p.extend(to_f64_vec(&out)?);
    }
    let bad = log_p
        .iter()
        .filter(|v| v.is_nan() || **v == f64::INFINITY)
        .count();
    if bad > 0 {
        return Err(Error::NonFinite(format!(
            "the model log-density is NaN or +inf at {bad} of {} grid points (for {})",
            log_p.len(),
            path.display()
        )));
    }
    let max = log_p.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let relative = log_p
        .iter()
        .map(|v| {
            if max.is_finite() {
                (v - max).exp()
            } else {
                0.0
            }
        })
        .collect();
    Ok((relative, max))
}

/// Counts of `points` `[n, 2]` in the `resolution x resolution` grid cells (row 0 at the top).
fn histogram(points: &Tensor, range: f64, resolution: usize, path: &Path) -> Result<Vec<f64>> {
    let size = points.size();
    if size.len() != 2 || size[1] != 2 {
        return Err(Error::shape(format!(
            "a 2-D histogram needs points [n, 2], got {size:?} (for {})",
            path.display()
        )));
    }
    let w = cell_width(range, resolution);
    let bins = 0.0..resolution as f64;
    let mut counts = vec![0.0; resolution * resolution];
    for p in to_f64_vec(points)?.chunks_exact(2) {
        let (col, row) = (((p[0] + range) / w).floor(), ((range - p[1]) / w).floor());
        if bins.contains(&col) && bins.contains(&row) {
            counts[row as usize * resolution + col as usize] += 1.0;
        }
    }
    Ok(counts)
}

/// The elements of `t` (any shape, device, dtype) as f64, in row-major order.
fn to_f64_vec(t: &Tensor) -> Result<Vec<f64>> {
    let flat = t
        .f_detach()?
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Double)?
        .f_reshape([-1])?
        .f_contiguous()?;
    Ok(Vec::<f64>::try_from(&flat)?)
}
