//! The Laplacian pyramid and the reconstruction losses of GLO.
//!
//! A Laplacian pyramid (Burt & Adelson, "The Laplacian Pyramid as a Compact Image Code", IEEE
//! Trans. Communications 1983) splits an image into band-pass levels and a low-pass residual:
//!
//! ```text
//! G^0 = x,   G^{j+1} = down(G^j),   L^j = G^j - up_{size(G^j)}(G^{j+1})  (j < J),   L^J = G^J
//! ```
//!
//! `down` blurs with the 5-tap binomial kernel `[1, 4, 6, 4, 1] / 16` in each direction (edges
//! replicated) and keeps every second pixel, so a side of `s` pixels becomes `ceil(s / 2)` (odd
//! sides included); `up` is bilinear interpolation back to the finer level's exact size. Adding
//! the levels back, `G^j = L^j + up(G^{j+1})` from `G^J = L^J` down to `G^0`, gives `x` again to
//! float rounding whatever `down` and `up` are: the pyramid is an invertible linear map.
//!
//! GLO's loss (Bojanowski et al., "Optimizing the Latent Space of Generative Networks",
//! ICML 2018, section 3.2; genflow SPEC section 4) is the Laplacian-pyramid L1 distance
//!
//! ```text
//! Lap1(x, x') = sum_j 2^{2j} |L^j(x) - L^j(x')|_1
//! ```
//!
//! with level 0 the finest. Level `j` has about `4^-j` as many pixels as `x`, so the weight
//! `2^{2j}` gives every level the same say per pixel. Here the sum is divided by the number of
//! values `C H W` of one image, so that the distance of images differing by `d` in every pixel is
//! about `(J + 1) d` rather than growing with the image size. Since the pyramid is linear,
//! `L^j(x) - L^j(x') = L^j(x - x')`: one pyramid of the difference is built, not two, and the
//! distance is zero exactly when `x = x'` (the map is injective and every weight positive).
//!
//! ```
//! use genflow::glann::LaplacianPyramid;
//! use genflow::tch::{Kind, Tensor};
//! let x = Tensor::rand([2, 3, 13, 10], (Kind::Double, tch::Device::Cpu));
//! let pyramid = LaplacianPyramid::new(4)?;
//! let levels = pyramid.decompose(&x)?;
//! assert_eq!(levels.len(), 5);                      // L^0..L^3 and the residual G^4
//! assert_eq!(levels[1].size(), [2, 3, 7, 5]);       // ceil(13 / 2), ceil(10 / 2)
//! let back = LaplacianPyramid::reconstruct(&levels)?;
//! assert!(f64::try_from((back - &x).abs().max())? < 1e-12);
//! let d = pyramid.distance(&x, &x)?;                // [2], zero for equal images
//! assert_eq!(Vec::<f64>::try_from(&d)?, [0.0, 0.0]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// The 1-D binomial filter of `down`, `[1, 4, 6, 4, 1] / 16` (Burt & Adelson's `a = 0.375`).
const BINOMIAL: [f64; 5] = [1.0, 4.0, 6.0, 4.0, 1.0];

/// A Laplacian pyramid of at most `levels` band-pass levels (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaplacianPyramid {
    levels: usize,
}

impl LaplacianPyramid {
    /// A pyramid of at most `levels >= 1` band-pass levels plus the low-pass residual.
    pub fn new(levels: usize) -> Result<Self> {
        if levels == 0 {
            return Err(Error::config(
                "a Laplacian pyramid needs at least 1 level (loss.levels >= 1)",
            ));
        }
        Ok(LaplacianPyramid { levels })
    }

    /// The number of band-pass levels an image of `height x width` gets: `levels`, or fewer when
    /// the image reaches 1 x 1 first (halving a 1 x 1 image changes nothing).
    pub fn levels_for(&self, height: i64, width: i64) -> usize {
        let (mut h, mut w, mut n) = (height, width, 0);
        while n < self.levels && (h > 1 || w > 1) {
            h = (h + 1) / 2;
            w = (w + 1) / 2;
            n += 1;
        }
        n
    }

    /// The levels `[L^0, ..., L^{J-1}, G^J]` of images `x` `[N, C, H, W]` (float or double), finest
    /// first; `J` is [`LaplacianPyramid::levels_for`] the image size.
    pub fn decompose(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let size = image_size(x, "decompose")?;
        let kernel = blur_kernel(size[1], x.kind(), x.device())?;
        let mut out = Vec::new();
        let mut g = x.shallow_clone();
        for _ in 0..self.levels_for(size[2], size[3]) {
            let coarse = down(&g, &kernel, size[1])?;
            let band = g.f_sub(&up(&coarse, &g.size())?)?;
            out.push(band);
            g = coarse;
        }
        out.push(g);
        Ok(out)
    }

    /// The images whose levels are `levels` (the inverse of [`LaplacianPyramid::decompose`]).
    pub fn reconstruct(levels: &[Tensor]) -> Result<Tensor> {
        let (last, bands) = levels.split_last().ok_or_else(|| {
            Error::shape("reconstruct needs the pyramid's levels, got none".to_string())
        })?;
        let mut g = last.shallow_clone();
        for band in bands.iter().rev() {
            g = band.f_add(&up(&g, &band.size())?)?;
        }
        Ok(g)
    }

    /// `Lap1(x, y) / (C H W)` per image, `[N]` (see the module docs); `x` and `y` are `[N, C, H, W]`
    /// of the same shape.
    pub fn distance(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        same_shape(x, y, "the Laplacian distance")?;
        let size = x.size();
        let values = (size[1] * size[2] * size[3]) as f64;
        let mut total: Option<Tensor> = None;
        for (j, level) in self.decompose(&x.f_sub(y)?)?.iter().enumerate() {
            let weight = 4f64.powi(j as i32) / values;
            let term = level
                .f_abs()?
                .f_sum_dim_intlist([1, 2, 3].as_slice(), false, level.kind())?
                .f_mul_scalar(weight)?;
            total = Some(match total {
                None => term,
                Some(t) => t.f_add(&term)?,
            });
        }
        total.ok_or_else(|| Error::shape("an empty pyramid has no distance".to_string()))
    }
}

/// The depthwise 2-D binomial kernel `[C, 1, 5, 5]` (the outer product of [`BINOMIAL`] / 16).
fn blur_kernel(channels: i64, kind: Kind, device: tch::Device) -> Result<Tensor> {
    let k = Tensor::f_from_slice(&BINOMIAL)?.f_div_scalar(16.0)?;
    let k2 = k.f_outer(&k)?.f_to_kind(kind)?.f_to_device(device)?;
    Ok(k2.f_expand([channels, 1, 5, 5], false)?.f_contiguous()?)
}

/// Blur (edges replicated) and keep every second pixel: `s -> ceil(s / 2)` per side.
fn down(g: &Tensor, kernel: &Tensor, channels: i64) -> Result<Tensor> {
    let padded = g.f_replication_pad2d([2, 2, 2, 2])?;
    Ok(padded.f_conv2d::<Tensor>(kernel, None, [2, 2], [0, 0], [1, 1], channels)?)
}

/// Bilinear interpolation of `coarse` to the height and width of `size` (`[N, C, H, W]`).
fn up(coarse: &Tensor, size: &[i64]) -> Result<Tensor> {
    Ok(coarse.f_upsample_bilinear2d([size[2], size[3]], false, None, None)?)
}

fn image_size(x: &Tensor, what: &str) -> Result<Vec<i64>> {
    let size = x.size();
    if size.len() != 4 || size.iter().any(|&s| s < 1) || !x.is_floating_point() {
        return Err(Error::shape(format!(
            "{what} takes float images [N, C, H, W] with every size at least 1, got {:?} {size:?}",
            x.kind()
        )));
    }
    Ok(size)
}

fn same_shape(x: &Tensor, y: &Tensor, what: &str) -> Result<()> {
    image_size(x, what)?;
    if x.size() != y.size() {
        return Err(Error::shape(format!(
            "{what} compares images of one shape, got {:?} and {:?}",
            x.size(),
            y.size()
        )));
    }
    Ok(())
}

/// The distance GLO minimises between an image and its reconstruction (`[loss]`).
///
/// ```toml
/// [loss]
/// kind = "laplacian"   # laplacian | l1 | l2
/// levels = 4           # laplacian only: band-pass levels of the pyramid
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ReconstructionLoss {
    /// `Lap1 / (C H W)` of [`LaplacianPyramid::distance`] (SPEC section 4).
    Laplacian {
        #[serde(default = "default_levels")]
        levels: usize,
    },
    /// The mean absolute difference over the pixels.
    L1,
    /// The mean squared difference over the pixels.
    L2,
}

fn default_levels() -> usize {
    4
}

impl Default for ReconstructionLoss {
    fn default() -> Self {
        ReconstructionLoss::Laplacian {
            levels: default_levels(),
        }
    }
}

impl ReconstructionLoss {
    /// Checks the number of levels.
    pub fn validate(&self) -> Result<()> {
        match self {
            ReconstructionLoss::Laplacian { levels } => LaplacianPyramid::new(*levels).map(|_| ()),
            _ => Ok(()),
        }
    }

    /// The distance of each image of `x` to the same image of `y`, `[N]` (both `[N, C, H, W]`).
    pub fn per_image(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        same_shape(x, y, "the reconstruction loss")?;
        let dims = [1i64, 2, 3];
        Ok(match self {
            ReconstructionLoss::Laplacian { levels } => {
                LaplacianPyramid::new(*levels)?.distance(x, y)?
            }
            ReconstructionLoss::L1 => {
                x.f_sub(y)?
                    .f_abs()?
                    .f_mean_dim(dims.as_slice(), false, x.kind())?
            }
            ReconstructionLoss::L2 => {
                x.f_sub(y)?
                    .f_square()?
                    .f_mean_dim(dims.as_slice(), false, x.kind())?
            }
        })
    }
}
