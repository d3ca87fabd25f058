//! Reading and writing one's own data for a trained model: vectors as CSV, images as PNG (one
//! image, a grid of them as genflow draws it, or a folder of PNGs), IDX or `.safetensors`, and
//! latents as CSV or `.safetensors`.
//!
//! Images are exchanged as float intensities in `[0, 1]` (8-bit pixels / 255; a `.safetensors`
//! tensor of floats is taken as intensities, of `u8` as 8-bit pixels).
//!
//! ```
//! use genflow::data::user_files::{read_vectors, write_csv};
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("points.csv");
//! write_csv(&path, &["x".into(), "y".into()], &[vec![0.5, -1.0], vec![2.0, 3.0]])?;
//! let points = read_vectors(&path, 2)?;
//! assert_eq!(points.size(), [2, 2]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::{idx, tensor_file};
use crate::plots::{GRID_PAD, GRID_PAD_GREY};
use crate::{Error, Result};
use image::{DynamicImage, GenericImageView};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// The file formats of image data, by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ImageFormat {
    Png,
    Folder,
    Idx,
    SafeTensors,
}

fn image_format(path: &Path) -> Result<ImageFormat> {
    if path.is_dir() {
        return Ok(ImageFormat::Folder);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if name.ends_with(".png") {
        Ok(ImageFormat::Png)
    } else if name.ends_with(".safetensors") {
        Ok(ImageFormat::SafeTensors)
    } else if name.ends_with(".idx")
        || name.ends_with("-ubyte")
        || name.ends_with("-ubyte.gz")
        || name.ends_with(".idx.gz")
    {
        Ok(ImageFormat::Idx)
    } else {
        Err(Error::file(
            path,
            "unknown image format: use .png (an image or a grid), a folder of PNGs, IDX \
             (-ubyte, .idx, optionally .gz) or .safetensors",
        ))
    }
}

/// Reads the points of a CSV file: one row per point, `dim` numbers per row, an optional header
/// line. Errors name the file, the line and what was wrong.
pub fn read_vectors(path: &Path, dim: i64) -> Result<Tensor> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::file(path, format!("cannot read the CSV file: {e}")))?;
    let mut values = Vec::new();
    let mut rows = 0i64;
    for (i, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if line.trim().is_empty() {
            continue;
        }
        let parsed: std::result::Result<Vec<f32>, _> =
            fields.iter().map(|f| f.parse::<f32>()).collect();
        let row = match parsed {
            Ok(row) => row,
            Err(_) if i == 0 => continue, // a header
            Err(e) => {
                return Err(Error::file(
                    path,
                    format!("line {}: not a number ({e}): {line}", i + 1),
                ))
            }
        };
        if row.len() as i64 != dim {
            return Err(Error::file(
                path,
                format!(
                    "line {}: {} values, the model takes points of {dim}",
                    i + 1,
                    row.len()
                ),
            ));
        }
        if let Some(v) = row.iter().find(|v| !v.is_finite()) {
            return Err(Error::file(
                path,
                format!("line {}: value {v} is not finite", i + 1),
            ));
        }
        values.extend(row);
        rows += 1;
    }
    if rows == 0 {
        return Err(Error::file(path, "holds no data rows"));
    }
    Ok(Tensor::f_from_slice(&values)?.reshape([rows, dim]))
}

/// Writes a CSV file with a header line and one line per row, atomically.
pub fn write_csv(path: &Path, header: &[String], rows: &[Vec<f64>]) -> Result<()> {
    let mut text = header.join(",");
    text.push('\n');
    for row in rows {
        let fields: Vec<String> = row.iter().map(|v| v.to_string()).collect();
        text.push_str(&fields.join(","));
        text.push('\n');
    }
    crate::fs::write_atomic(path, text.as_bytes())
}

/// The rows `[n, d]` of a 2-d tensor as `f64` vectors.
pub fn tensor_rows(t: &Tensor) -> Result<Vec<Vec<f64>>> {
    let size = t.size();
    let (n, d) = match size[..] {
        [n, d] => (n as usize, d as usize),
        _ => return Err(Error::shape(format!("expected rows [n, d], got {size:?}"))),
    };
    let flat = Vec::<f64>::try_from(
        t.to_kind(Kind::Double)
            .to_device(tch::Device::Cpu)
            .reshape([-1]),
    )?;
    Ok((0..n).map(|i| flat[i * d..(i + 1) * d].to_vec()).collect())
}

/// Reads images of per-image shape `shape = [C, H, W]` (C = 1 or 3) as intensities
/// `[n, C, H, W]` in `[0, 1]`, from a PNG (one image, or a grid of images with genflow's
/// layout), a folder of PNGs (in sorted order), an IDX file of `[n, H, W]` bytes, or a
/// `.safetensors` file holding one tensor (or one named `images`) of shape `[n, C, H, W]`.
pub fn read_images(path: &Path, shape: [i64; 3]) -> Result<Tensor> {
    if !path.exists() {
        return Err(Error::file(path, "not found"));
    }
    let images = match image_format(path)? {
        ImageFormat::Png => read_png_tiles(path, shape)?,
        ImageFormat::Folder => read_png_folder(path, shape)?,
        ImageFormat::Idx => read_idx_images(path, shape)?,
        ImageFormat::SafeTensors => read_image_tensor(path, shape)?,
    };
    if images.size()[0] == 0 {
        return Err(Error::file(path, "holds no images"));
    }
    Ok(images)
}

/// Writes images `[n, C, H, W]` (intensities, clamped to `[0, 1]`) to `path` by its extension: a
/// `.png` grid 8 images wide, an IDX file of bytes (one channel), or `.safetensors` (f32 under
/// `images`).
pub fn write_images(path: &Path, images: &Tensor) -> Result<()> {
    let images = images
        .to_kind(Kind::Float)
        .to_device(tch::Device::Cpu)
        .clamp(0.0, 1.0);
    match image_format(path)? {
        ImageFormat::Png => crate::plots::save_image_grid(&images, 8, path),
        ImageFormat::SafeTensors => {
            tensor_file::save(path, &[("images".to_string(), images)], Default::default())
        }
        ImageFormat::Idx => {
            let size = images.size();
            if size[1] != 1 {
                return Err(Error::file(
                    path,
                    format!("IDX holds one channel; these images have {}", size[1]),
                ));
            }
            let bytes =
                Vec::<u8>::try_from((images * 255.0).round().to_kind(Kind::Uint8).reshape([-1]))?;
            let dims = [size[0], size[2], size[3]];
            let mut out = vec![0u8, 0, 0x08, 3];
            for d in dims {
                out.extend((d as u32).to_be_bytes());
            }
            out.extend(bytes);
            crate::fs::write_atomic(path, &out)
        }
        ImageFormat::Folder => Err(Error::file(
            path,
            "is a folder; name a .png, IDX or .safetensors file",
        )),
    }
}

/// The tensor of a `.safetensors` file: the one named `name`, else its only tensor.
pub fn read_tensor(path: &Path, name: &str) -> Result<Tensor> {
    let (mut tensors, _) = tensor_file::load(path)?;
    if let Some(t) = tensors.remove(name) {
        return Ok(t);
    }
    if tensors.len() == 1 {
        if let Some((_, t)) = tensors.pop_first() {
            return Ok(t);
        }
    }
    let names: Vec<&String> = tensors.keys().collect();
    Err(Error::file(
        path,
        format!("holds no tensor named '{name}' (it holds {names:?})"),
    ))
}

/// Checks `images` against `[n, C, H, W]` of `shape` and makes floats in `[0, 1]` of them.
fn intensities(path: &Path, images: Tensor, shape: [i64; 3]) -> Result<Tensor> {
    let size = images.size();
    if size.len() != 4 || size[1..] != shape {
        return Err(Error::file(
            path,
            format!(
                "holds images of shape {size:?}; the model takes [n, {}, {}, {}]",
                shape[0], shape[1], shape[2]
            ),
        ));
    }
    if images.numel() == 0 {
        return Err(Error::file(path, "holds no images"));
    }
    let images = if images.kind() == Kind::Uint8 {
        images.to_kind(Kind::Float) / 255.0
    } else {
        images.to_kind(Kind::Float)
    };
    let (lo, hi) = tch::no_grad(|| {
        (
            images.min().double_value(&[]),
            images.max().double_value(&[]),
        )
    });
    if !(lo >= 0.0 && hi <= 1.0) {
        return Err(Error::file(
            path,
            format!("holds values in [{lo}, {hi}]; image intensities must lie in [0, 1] (or be u8 pixels)"),
        ));
    }
    Ok(images)
}

fn read_image_tensor(path: &Path, shape: [i64; 3]) -> Result<Tensor> {
    intensities(path, read_tensor(path, "images")?, shape)
}

fn read_idx_images(path: &Path, shape: [i64; 3]) -> Result<Tensor> {
    let array = idx::read_idx(path)?;
    let [n, h, w] = match array.dims[..] {
        [n, h, w] => [n as i64, h as i64, w as i64],
        _ => {
            return Err(Error::file(
                path,
                format!(
                    "IDX images have 3 dimensions [n, H, W], this file has {:?}",
                    array.dims
                ),
            ))
        }
    };
    let images = Tensor::f_from_slice(&array.data)?.reshape([n, 1, h, w]);
    intensities(path, images, shape)
}

fn read_png_folder(dir: &Path, shape: [i64; 3]) -> Result<Tensor> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::file(dir, format!("cannot list the folder: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::file(dir, "holds no .png files"));
    }
    let images = files
        .iter()
        .map(|f| read_png_tiles(f, shape))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&images, 0))
}

/// The images of one PNG: the whole picture when it is one image of `shape`, else the tiles of a
/// genflow grid (whole-number upscaling, [`GRID_PAD`] pixels between tiles; trailing cells of
/// the padding grey are skipped).
fn read_png_tiles(path: &Path, shape: [i64; 3]) -> Result<Tensor> {
    let [c, h, w] = shape;
    if c != 1 && c != 3 {
        return Err(Error::file(
            path,
            format!("PNG images have 1 or 3 channels, the model takes {c}"),
        ));
    }
    let img = image::open(path)
        .map_err(|e| Error::file(path, format!("cannot decode the image: {e}")))?;
    let (gw, gh) = img.dimensions();
    let (h, w) = (h as u32, w as u32);
    let pixels = |img: &DynamicImage| -> Vec<u8> {
        if c == 1 {
            img.to_luma8().into_raw()
        } else {
            img.to_rgb8().into_raw()
        }
    };
    if (gw, gh) == (w, h) {
        let data = pixels(&img);
        return channels_first(&data, 1, c, h, w);
    }
    let layout = grid_layout(gw, gh, w, h).ok_or_else(|| {
        Error::file(
            path,
            format!(
                "is {gw}x{gh} pixels: neither one {w}x{h} image nor a grid of them \
                 ({GRID_PAD}-pixel gaps, as `genflow sample` draws it)"
            ),
        )
    })?;
    let (cols, rows, factor) = layout;
    let mut data = Vec::new();
    let mut count = 0;
    for row in 0..rows {
        for col in 0..cols {
            let (x0, y0) = (
                GRID_PAD + col * (w * factor + GRID_PAD),
                GRID_PAD + row * (h * factor + GRID_PAD),
            );
            let tile = img.crop_imm(x0, y0, w * factor, h * factor);
            let tile = if factor > 1 {
                tile.resize_exact(w, h, image::imageops::FilterType::Nearest)
            } else {
                tile
            };
            if tile.to_rgb8().pixels().all(|p| p.0 == [GRID_PAD_GREY; 3]) {
                // the unused cells after the last image of a grid
                return channels_first(&data, count, c, h, w);
            }
            data.extend(pixels(&tile));
            count += 1;
        }
    }
    channels_first(&data, count, c, h, w)
}

/// `(columns, rows, upscale factor)` of a grid of `w x h` tiles that fills `gw x gh` pixels.
fn grid_layout(gw: u32, gh: u32, w: u32, h: u32) -> Option<(u32, u32, u32)> {
    (1..=gw / w.max(1)).find_map(|factor| {
        let (cell_w, cell_h) = (w * factor + GRID_PAD, h * factor + GRID_PAD);
        let fits =
            |total: u32, cell: u32| total > GRID_PAD && (total - GRID_PAD).is_multiple_of(cell);
        (fits(gw, cell_w) && fits(gh, cell_h))
            .then(|| ((gw - GRID_PAD) / cell_w, (gh - GRID_PAD) / cell_h, factor))
    })
}

/// Interleaved 8-bit pixels of `n` images `h x w x c` to intensities `[n, c, h, w]`.
fn channels_first(data: &[u8], n: i64, c: i64, h: u32, w: u32) -> Result<Tensor> {
    Ok(Tensor::f_from_slice(data)?
        .reshape([n, h as i64, w as i64, c])
        .permute([0, 3, 1, 2])
        .to_kind(Kind::Float)
        / 255.0)
}
