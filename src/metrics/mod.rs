//! Evaluation metrics.
//!
//! [`bits_per_dim`]: the negative log-likelihood of discrete data in bits per dimension, from the
//! log-density of the dequantised data scaled to `[0, 1)` (SPEC section 1; Theis et al. 2016;
//! the official i-ResNet and Residual Flows code compute `-log p / (D ln 2) + 8` for 8-bit data).

use tch::Tensor;

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
