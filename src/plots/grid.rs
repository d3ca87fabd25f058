//! A grid of images in one PNG (like torchvision's `save_image`).

use std::path::Path;

use image::{Rgb, RgbImage};
use tch::{Device, Kind, Tensor};

use super::raster::{upscale, write_png};
use crate::{Error, Result};

/// Padding in pixels around and between the images of a grid (`crate::data::user_files` reads
/// grids back by it).
pub const GRID_PAD: u32 = 2;
/// Grey level of the padding (and of unused cells), visible against both black and white images.
pub const GRID_PAD_GREY: u8 = 128;
/// Images are upscaled by whole factors until the grid is at least this wide.
const GRID_MIN_PX: u32 = 256;

/// Saves `images` `[N, C, H, W]` (float, C = 1 or 3, any device and dtype; values clamped to
/// `[0, 1]`, NaN shown as 0) as one PNG: `nrow` images per row (torchvision's meaning),
/// `ceil(N / nrow)` rows, 2 grey pixels around each image. Each image is enlarged by a whole
/// factor (nearest neighbour) until the grid is at least 256 px wide, so 8x8 or 28x28 images
/// stay visible. Written atomically.
///
/// Errors when the tensor is not `[N >= 1, 1 or 3, H >= 1, W >= 1]` float, when `nrow` is 0,
/// or when the file cannot be written.
pub fn save_image_grid(images: &Tensor, nrow: usize, path: &Path) -> Result<()> {
    let size = images.size();
    let (n, h, w) = match size[..] {
        [n, 1 | 3, h, w] if n > 0 && h > 0 && w > 0 && images.f_is_floating_point()? => (n, h, w),
        _ => {
            return Err(Error::shape(format!(
                "an image grid needs float images [N, C, H, W] with C = 1 or 3 and values in [0, 1], got {:?} {size:?} (for {}); divide uint8 images by 255",
                images.kind(),
                path.display()
            )))
        }
    };
    if nrow == 0 {
        return Err(Error::config(format!(
            "an image grid needs nrow >= 1 images per row (for {})",
            path.display()
        )));
    }
    let rgb = images
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .f_nan_to_num(0.0, None, None)?
        .f_clamp(0.0, 1.0)?
        .f_mul_scalar(255.0)?
        .f_round()?
        .f_to_kind(Kind::Uint8)?
        .f_expand([n, 3, h, w], false)?
        .f_permute([0, 2, 3, 1])?
        .f_contiguous()?
        .f_reshape([-1])?;
    let bytes = Vec::<u8>::try_from(&rgb)?;
    let (n, h, w) = (n as usize, h as u32, w as u32);
    let cols = nrow.min(n) as u32;
    let rows = n.div_ceil(nrow) as u32;
    let factor = (GRID_MIN_PX.saturating_sub(GRID_PAD * (cols + 1)))
        .div_ceil(cols * w)
        .max(1);
    let (cell_w, cell_h) = (w * factor + GRID_PAD, h * factor + GRID_PAD);
    let mut grid = RgbImage::from_pixel(
        cols * cell_w + GRID_PAD,
        rows * cell_h + GRID_PAD,
        Rgb([GRID_PAD_GREY; 3]),
    );
    for (i, pixels) in bytes.chunks_exact((h * w * 3) as usize).enumerate() {
        let img = RgbImage::from_raw(w, h, pixels.to_vec()).ok_or_else(|| {
            Error::shape(format!(
                "image {i} has the wrong number of pixels (for {})",
                path.display()
            ))
        })?;
        let (col, row) = (i as u32 % cols, i as u32 / cols);
        let (x, y) = (GRID_PAD + col * cell_w, GRID_PAD + row * cell_h);
        image::imageops::replace(
            &mut grid,
            &upscale(&img, factor),
            i64::from(x),
            i64::from(y),
        );
    }
    write_png(&grid, path)
}
