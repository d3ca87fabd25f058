//! Evaluation metrics.
//!
//! [`bits_per_dim`]: the negative log-likelihood of discrete data in bits per dimension, from the
//! log-density of the dequantised data scaled to `[0, 1)` (SPEC section 1; Theis et al. 2016;
//! the official i-ResNet and Residual Flows code compute `-log p / (D ln 2) + 8` for 8-bit data).
//!
//! Sample quality (SPEC section 6), each in its own module and each computed in `f64` from feature
//! tensors `[n, d]` of any float kind (f32 or f64) on any device:
//!
//! * [`frechet`]: the Frechet distance of Heusel et al. (2017) by a symmetric eigen formulation that
//!   stays right for rank-deficient covariances, with reusable [`FeatureStats`];
//! * [`kid()`]: the kernel inception distance of Binkowski et al. (2018), unbiased `MMD^2` with the
//!   cubic polynomial kernel on random subsets;
//! * [`precision_recall()`]: precision and recall with `k`-nearest-neighbour manifolds of
//!   Kynkaanniemi et al. (2019), `k = 3`;
//! * [`toy_modes`]: modes covered and share of high-quality samples on `8gaussians`;
//! * [`reconstruction`]: per-item reconstruction MSE and label agreement.
//!
//! None of them panics on bad input: wrong shapes, too few samples and NaN or infinite values are
//! one-line [`Error`]s naming the metric, the argument and the fix.

pub mod frechet;
pub mod kid;
pub mod precision_recall;
pub mod reconstruction;
pub mod toy_modes;

pub use frechet::{
    frechet_distance, frechet_distance_from_stats, sqrtm_psd, trace_sqrt_product, FeatureStats,
    FrechetReport,
};
pub use kid::{kid, mmd2_unbiased, KidOptions, KidReport};
pub use precision_recall::{precision_recall, precision_recall_k, PrecisionRecall};
pub use reconstruction::{label_agreement, reconstruction_mse, ReconstructionMse};
pub use toy_modes::{eight_gaussians_modes, ToyModes};

use tch::{Kind, Tensor};

use crate::{Error, Result};

/// Bits per dimension `(-log p(x_scaled) / D + ln L) / ln 2` of `L`-level data, where
/// `log_prob_scaled = log p((x + u) / L)` is the model's log-density of the dequantised data scaled
/// to `[0, 1)` and `D` the number of dimensions per sample.
///
/// Scaling `[0, L)^D` down to `[0, 1)^D` multiplies densities by `L^D`, so the density of the
/// unscaled dequantised data is `log p(x_scaled) - D ln L`; its negative per dimension, in bits, is
/// the formula above (an upper bound on the discrete negative log-likelihood, by Jensen).
///
/// ```
/// use genflow::metrics::bits_per_dim;
/// use tch::Tensor;
///
/// // a uniform density on [0, 1)^D (log p = 0) spends exactly 8 bits on each 8-bit pixel
/// let bpd = bits_per_dim(&Tensor::from_slice(&[0.0f64]), 784, 256);
/// assert!((bpd.double_value(&[0]) - 8.0).abs() < 1e-12);
/// // log p = D ln 2 on the scaled cube saves one bit per dimension
/// let bpd = bits_per_dim(&Tensor::from_slice(&[784.0 * 2f64.ln()]), 784, 256);
/// assert!((bpd.double_value(&[0]) - 7.0).abs() < 1e-12);
/// ```
pub fn bits_per_dim(log_prob_scaled: &Tensor, dims: i64, levels: u32) -> Tensor {
    (-log_prob_scaled / dims as f64 + f64::from(levels).ln()) / std::f64::consts::LN_2
}

/// The float tensor `t` as contiguous `f64` on its device, after checking that it is floating point
/// and holds only finite values; `metric` and `name` label the error messages.
pub(crate) fn finite_f64(t: &Tensor, metric: &str, name: &str) -> Result<Tensor> {
    if !t.f_is_floating_point()? {
        return Err(Error::shape(format!(
            "{metric}: {name} must be a float tensor (f32 or f64), got {:?}; convert it with \
             to_kind(Kind::Float)",
            t.kind()
        )));
    }
    let x = t.f_to_kind(Kind::Double)?.f_contiguous()?;
    let bad = x.f_isfinite()?.f_logical_not()?;
    let count = bad.f_sum(Kind::Int64)?.f_int64_value(&[])?;
    if count > 0 {
        let first = bad.f_reshape([-1])?.f_nonzero()?.f_int64_value(&[0, 0])?;
        let dims = t.size();
        // report the row (first index) of the first bad value when there are rows
        let per_row: i64 = dims.iter().skip(1).product();
        let place = if dims.len() >= 2 && per_row > 0 {
            format!("first in row {}", first / per_row)
        } else {
            format!("first at flat index {first}")
        };
        return Err(Error::NonFinite(format!(
            "{metric}: {name} has {count} NaN or infinite value(s), {place}; remove or fix those \
             samples before computing the metric"
        )));
    }
    Ok(x)
}

/// The feature matrix `t` `[n, d]` as contiguous `f64` on its device, after checking that it is a
/// 2-D float tensor of finite values with `d >= 1` and at least `min_rows` rows.
pub(crate) fn feature_matrix(
    t: &Tensor,
    metric: &str,
    name: &str,
    min_rows: usize,
) -> Result<Tensor> {
    let size = t.size();
    if size.len() != 2 {
        return Err(Error::shape(format!(
            "{metric}: {name} must be a 2-D feature tensor [n, d], got shape {size:?}; flatten \
             each sample to one row first (e.g. x.flatten(1, -1))"
        )));
    }
    if size[1] < 1 {
        return Err(Error::shape(format!(
            "{metric}: {name} has shape {size:?}, with no feature dimensions; give at least one \
             feature per sample"
        )));
    }
    if (size[0] as usize) < min_rows {
        return Err(Error::shape(format!(
            "{metric}: {name} has {} sample(s), needs at least {min_rows}; pass more samples",
            size[0]
        )));
    }
    finite_f64(t, metric, name)
}
