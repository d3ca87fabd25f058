//! The logit transform (Dinh et al. 2017, RealNVP, section 4.1): `y = logit(alpha + (1 - 2 alpha) x)`
//! maps `[0, 1]` onto a bounded interval of the real line with
//! `ln|det J| = sum_i [ln(1 - 2 alpha) - ln p_i - ln(1 - p_i)]`, `p_i = alpha + (1 - 2 alpha) x_i`,
//! computed as `ln(1 - 2 alpha) + softplus(y_i) + softplus(-y_i)` (stable for large `|y_i|`);
//! inverse `x = (sigmoid(y) - alpha) / (1 - 2 alpha)`. RealNVP and Residual Flows use
//! `alpha = 0.05` (CIFAR-10) and `alpha = 1e-6` (MNIST).
//!
//! ```
//! use genflow::flows::{FlowContext, LogitTransform, Transform};
//! use genflow::linalg::logdet::LogDetEstimator;
//! use tch::Tensor;
//!
//! let mut ctx = FlowContext::eval(LogDetEstimator::Exact, 0);
//! let x = Tensor::from_slice(&[0.0f64, 0.3, 1.0]).reshape([1, 3]);
//! let logit = LogitTransform::new(0.05)?;
//! let (y, _) = logit.forward(&x, &mut ctx)?;
//! let back = logit.inverse(&y, &mut ctx)?;
//! assert!((back - &x).abs().max().double_value(&[]) < 1e-12);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::dequantize::{dims_per_sample, value_range};
use super::layer::{Built, Domain, LayerExample, LayerSpec};
use super::transform::{FlowContext, Transform};
use super::LayerConfig;
use crate::linalg::logdet::per_sample_sum;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{nn::Path, Tensor};

/// The configuration of a [`LogitTransform`] (`{ layer = "logit", alpha = 1e-6 }`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogitConfig {
    /// `0 < alpha < 0.5` (1e-6 for MNIST, 0.05 otherwise).
    pub alpha: f64,
}

impl LayerSpec for LogitConfig {
    fn collection(&self) -> Option<&'static str> {
        None
    }

    fn build(&self, _p: &Path, input: &[i64]) -> Result<Built> {
        Ok((Box::new(LogitTransform::new(self.alpha)?), input.to_vec()))
    }

    fn examples() -> Vec<LayerExample> {
        let config = LayerConfig::LogitTransform(LogitConfig { alpha: 0.05 });
        vec![LayerExample {
            domain: Domain::UnitInterval,
            ..LayerExample::new("logit", config, &[2, 4, 4])
        }]
    }
}

/// The logit transform `y = logit(alpha + (1 - 2 alpha) x)`; see the [module documentation](self).
#[derive(Debug, Clone, Copy)]
pub struct LogitTransform {
    alpha: f64,
}

impl LogitTransform {
    /// The transform with `0 < alpha < 0.5` (1e-6 for MNIST, 0.05 otherwise).
    pub fn new(alpha: f64) -> Result<Self> {
        if !(alpha > 0.0 && alpha < 0.5) {
            return Err(Error::config(format!(
                "logit alpha must satisfy 0 < alpha < 0.5 (1e-6 for MNIST, 0.05 otherwise), got {alpha}"
            )));
        }
        Ok(LogitTransform { alpha })
    }

    /// `alpha`.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }
}

impl Transform for LogitTransform {
    fn forward(&self, x: &Tensor, _ctx: &mut FlowContext) -> Result<(Tensor, Tensor)> {
        dims_per_sample(x)?;
        let (lo, hi) = value_range(x);
        if !(lo >= 0.0 && hi <= 1.0) {
            return Err(Error::config(format!(
                "the logit transform expects inputs scaled to [0, 1], got values in [{lo}, {hi}]; \
                 dequantise and scale the images first"
            )));
        }
        let scale = 1.0 - 2.0 * self.alpha;
        let p = x * scale + self.alpha;
        let y = p.logit(None::<f64>);
        let per_entry = y.softplus() + (-&y).softplus() + scale.ln();
        Ok((y, per_sample_sum(&per_entry)))
    }

    fn inverse(&self, y: &Tensor, _ctx: &mut FlowContext) -> Result<Tensor> {
        Ok((y.sigmoid() - self.alpha) / (1.0 - 2.0 * self.alpha))
    }
}
