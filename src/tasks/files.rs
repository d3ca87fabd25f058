//! A run's data in files, by the kind of data its model takes ([`DataKind`]): points as CSV,
//! images as PNG, IDX or `.safetensors` ([`crate::data::user_files`]), latents as CSV or
//! `.safetensors`, log-likelihoods as CSV. The command line's `sample`, `log-prob`, `encode` and
//! `decode` read and write through here.

use super::{DataKind, ItemConvergence, LogProb};
use crate::data::tensor_file;
use crate::data::user_files::{
    read_images, read_tensor, read_vectors, tensor_rows, write_csv, write_images,
};
use crate::{Error, Result};
use std::path::Path;
use tch::{Kind, Tensor};

/// The lower-case extension of `path`.
fn extension(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default()
}

/// Column names `prefix0, prefix1, ...` (`x, y` for 2-D points).
fn columns(prefix: &str, n: i64) -> Vec<String> {
    if prefix == "x" && n == 2 {
        return vec!["x".into(), "y".into()];
    }
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Data-space items from `path`: points from CSV, images from PNG/IDX/`.safetensors`.
pub fn read_items(kind: DataKind, path: &Path) -> Result<Tensor> {
    match kind {
        DataKind::Vectors { dim, .. } => read_vectors(path, dim),
        DataKind::Images { shape, .. } => read_images(path, shape),
    }
}

/// Writes data-space items (samples, decoded items) to `path`: points as CSV (with the
/// inverse's per-item convergence as extra columns when given) or as a 2-D histogram `.png`;
/// images as a `.png` grid, IDX or `.safetensors` (with `inverse_iters`, `inverse_residual` and
/// `converged` tensors when given).
pub fn write_items(
    kind: DataKind,
    path: &Path,
    items: &Tensor,
    convergence: Option<&[ItemConvergence]>,
) -> Result<()> {
    match kind {
        DataKind::Vectors { dim, plot_range } => match extension(path).as_str() {
            "csv" => {
                let mut header = columns("x", dim);
                let mut rows = tensor_rows(items)?;
                if let Some(items) = convergence {
                    header.extend(
                        ["inverse_iters", "inverse_residual", "converged"].map(String::from),
                    );
                    for (row, c) in rows.iter_mut().zip(items) {
                        row.extend([
                            c.iterations as f64,
                            c.residual,
                            f64::from(u8::from(c.converged)),
                        ]);
                    }
                }
                write_csv(path, &header, &rows)
            }
            "png" if dim == 2 => crate::plots::save_scatter_histogram(items, plot_range, path),
            _ => Err(Error::file(
                path,
                "points are written as .csv (or a .png histogram of 2-D points)",
            )),
        },
        DataKind::Images { .. } => match (extension(path).as_str(), convergence) {
            ("safetensors", Some(items_convergence)) => {
                let mut tensors = vec![(
                    "images".to_string(),
                    items.to_kind(Kind::Float).clamp(0.0, 1.0),
                )];
                tensors.extend(convergence_tensors(items_convergence));
                tensor_file::save(path, &tensors, Default::default())
            }
            _ => write_images(path, items),
        },
    }
}

fn convergence_tensors(items: &[ItemConvergence]) -> Vec<(String, Tensor)> {
    let iters: Vec<i64> = items.iter().map(|c| c.iterations).collect();
    let residual: Vec<f64> = items.iter().map(|c| c.residual).collect();
    let converged: Vec<u8> = items.iter().map(|c| u8::from(c.converged)).collect();
    vec![
        ("inverse_iters".into(), Tensor::from_slice(&iters)),
        ("inverse_residual".into(), Tensor::from_slice(&residual)),
        ("converged".into(), Tensor::from_slice(&converged)),
    ]
}

/// Latents `[n, latent_shape...]` from a CSV (flat latents) or `.safetensors` file (tensor `z`).
pub fn read_latents(latent_shape: &[i64], path: &Path) -> Result<Tensor> {
    let z = match extension(path).as_str() {
        "csv" => {
            let dim: i64 = latent_shape.iter().product();
            read_vectors(path, dim)?
        }
        "safetensors" => read_tensor(path, "z")?.to_kind(Kind::Float),
        _ => {
            return Err(Error::file(
                path,
                "latents are read from .csv or .safetensors",
            ))
        }
    };
    let n = z.size()[0];
    let want: Vec<i64> = std::iter::once(n)
        .chain(latent_shape.iter().copied())
        .collect();
    if z.numel() as i64 != want.iter().product::<i64>() {
        return Err(Error::file(
            path,
            format!(
                "holds latents of shape {:?}; the model's are [n, {latent_shape:?}]",
                z.size()
            ),
        ));
    }
    Ok(z.reshape(want.as_slice()))
}

/// Writes latents to a CSV (flattened per item) or `.safetensors` file (tensor `z`).
pub fn write_latents(path: &Path, z: &Tensor) -> Result<()> {
    match extension(path).as_str() {
        "csv" => {
            let flat = z.reshape([z.size()[0], -1]);
            write_csv(path, &columns("z", flat.size()[1]), &tensor_rows(&flat)?)
        }
        "safetensors" => tensor_file::save(
            path,
            &[("z".to_string(), z.shallow_clone())],
            Default::default(),
        ),
        _ => Err(Error::file(
            path,
            "latents are written as .csv or .safetensors",
        )),
    }
}

/// Writes per-item log-likelihoods as CSV: `log_prob` (and `bits_per_dim` for images).
pub fn write_log_prob(path: &Path, values: &LogProb) -> Result<()> {
    if extension(path) != "csv" {
        return Err(Error::file(path, "log-likelihoods are written as .csv"));
    }
    let (header, rows): (Vec<String>, Vec<Vec<f64>>) = match &values.bits_per_dim {
        Some(bpd) => (
            vec!["log_prob".into(), "bits_per_dim".into()],
            values
                .log_prob
                .iter()
                .zip(bpd)
                .map(|(l, b)| vec![*l, *b])
                .collect(),
        ),
        None => (
            vec!["log_prob".into()],
            values.log_prob.iter().map(|l| vec![*l]).collect(),
        ),
    };
    write_csv(path, &header, &rows)
}
