//! Mode coverage and sample quality on `8gaussians` (SPEC section 6; the "modes covered" and
//! "high-quality samples" of Srivastava et al., "VEEGAN", NeurIPS 2017, section 5.1, and Dumoulin
//! et al.'s ring-of-Gaussians experiments).
//!
//! Each sample belongs to the nearest of the 8 component means `mu_k` (radius 2.8289, see
//! [`crate::data::toy::eight_gaussians_means`]); it is *high quality* when it lies within 3 standard
//! deviations of that mean, `|x - mu_k| <= 3 sigma` with `sigma = 0.5 / 1.414`
//! ([`crate::data::toy::EIGHT_GAUSSIANS_SIGMA`]); a mode is *covered* when at least 1% of all
//! samples are high-quality samples of that mode:
//!
//! ```text
//! high_quality_fraction = #{i : min_k |x_i - mu_k| <= 3 sigma} / n
//! modes_covered         = #{k : 100 * #{i high quality, nearest k} >= n}
//! ```
//!
//! For exact samples of `8gaussians`, `high_quality_fraction` is close to the mass of a 2-D isotropic
//! Gaussian within 3 sigma of its mean, `P(r <= 3 sigma) = 1 - exp(-9/2) = 0.98889` (the 3-sigma
//! discs of neighbouring modes, 6.12 sigma apart, do not overlap).

use serde::Serialize;
use tch::{Kind, Tensor};

use super::feature_matrix;
use crate::data::toy::{eight_gaussians_means, EIGHT_GAUSSIANS_SIGMA};
use crate::{Error, Result};

const METRIC: &str = "8gaussians modes";

/// High-quality radius in standard deviations.
const QUALITY_SIGMAS: f64 = 3.0;

/// Modes covered and sample quality of 2-D samples against the 8 modes of `8gaussians`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ToyModes {
    /// Modes with at least 1% of all samples as high-quality samples (0 to 8).
    pub modes_covered: usize,
    /// Share of samples within 3 sigma of their nearest mode.
    pub high_quality_fraction: f64,
    /// Samples nearest to each mode, in the order of
    /// [`crate::data::toy::eight_gaussians_means`].
    pub nearest_counts: [usize; 8],
    /// High-quality samples of each mode (same order).
    pub high_quality_counts: [usize; 8],
    /// Number of samples.
    pub n: usize,
}

/// Mode coverage of 2-D samples `[n, 2]` (any float kind and device; `f64`) on `8gaussians` (module
/// docs): nearest mode, high quality within 3 sigma, covered at 1% of all samples.
///
/// Errors when `samples` is not `[n, 2]` with `n >= 1`, or holds NaN or infinite values.
///
/// ```
/// use genflow::data::toy::ToyDensity;
/// use genflow::metrics::eight_gaussians_modes;
///
/// let samples = ToyDensity::EightGaussians.sample(4000, 3);
/// let modes = eight_gaussians_modes(&samples)?;
/// assert_eq!(modes.modes_covered, 8);
/// // about 1 - exp(-4.5) = 0.989 of exact samples lie within 3 sigma of their mode
/// assert!((modes.high_quality_fraction - 0.989).abs() < 0.01);
/// assert_eq!(modes.nearest_counts.iter().sum::<usize>(), 4000);
/// # Ok::<(), genflow::Error>(())
/// ```
pub fn eight_gaussians_modes(samples: &Tensor) -> Result<ToyModes> {
    let size = samples.size();
    if size.len() != 2 || size[1] != 2 {
        return Err(Error::shape(format!(
            "{METRIC}: samples must be 2-D points of shape [n, 2], got {size:?}"
        )));
    }
    let x = feature_matrix(samples, METRIC, "samples", 1)?;
    let n = size[0] as usize;
    let flat: Vec<f64> = eight_gaussians_means().iter().flatten().copied().collect();
    let means = Tensor::f_from_slice(&flat)?
        .f_reshape([8, 2])?
        .f_to_device(x.device())?;
    let sq = x
        .f_unsqueeze(1)?
        .f_sub(&means.f_unsqueeze(0)?)?
        .f_square()?
        .f_sum_dim_intlist([2i64].as_slice(), false, Kind::Double)?;
    let (nearest_sq, nearest) = sq.f_min_dim(1, false)?;
    let radius = QUALITY_SIGMAS * EIGHT_GAUSSIANS_SIGMA;
    let good = nearest_sq.f_le(radius * radius)?;
    let nearest_counts = counts(&nearest)?;
    let high_quality_counts = counts(&nearest.f_masked_select(&good)?)?;
    let high_quality: usize = high_quality_counts.iter().sum();
    let modes_covered = high_quality_counts
        .iter()
        .filter(|&&c| 100 * c >= n)
        .count();
    Ok(ToyModes {
        modes_covered,
        high_quality_fraction: high_quality as f64 / n as f64,
        nearest_counts,
        high_quality_counts,
        n,
    })
}

/// How often each of `0..8` occurs in the integer tensor `labels`.
fn counts(labels: &Tensor) -> Result<[usize; 8]> {
    let bins = labels.f_bincount(None::<Tensor>, 8)?;
    let v = Vec::<i64>::try_from(&bins.f_to_kind(Kind::Int64)?)?;
    let mut out = [0usize; 8];
    for (o, c) in out.iter_mut().zip(v) {
        *o = c as usize;
    }
    Ok(out)
}
