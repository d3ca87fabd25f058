//! A linear layer made of `K` rank-one matrix exponentials (SPEC section 2; Su 2019-03-01):
//! `W = exp(x_K y_K^T) ... exp(x_1 y_1^T)`, each factor `I + phi(s_i) x_i y_i^T` with
//! `s_i = y_i^T x_i` and `phi(s) = expm1(s)/s` ([`crate::linalg::rank_one`]).
//!
//! Every factor is invertible (`exp(-x_i y_i^T)`) with `det = e^{s_i}`, so
//! `ln |det W| = sum_i s_i` per position (times `H W` for `[batch, C, H, W]` inputs, where the layer
//! is a 1x1 convolution over channels). Forward, inverse and log-det cost `O(K C)` per position;
//! `W` itself is never formed.
//!
//! ```
//! use genflow::flows::{FlowContext, RankOneExp, RankOneExpConfig, Transform};
//! use genflow::linalg::logdet::LogDetEstimator;
//! use tch::{nn::VarStore, Device, Kind, Tensor};
//! let vs = VarStore::new(Device::Cpu);
//! let layer = RankOneExp::new(&(vs.root() / "r1"), 2, RankOneExpConfig::default())?;
//! let mut ctx = FlowContext::eval(LogDetEstimator::Exact, 0);
//! let x = Tensor::randn([5, 2], (Kind::Float, Device::Cpu));
//! let (y, _logdet) = layer.forward(&x, &mut ctx)?;
//! assert!(f64::try_from((layer.inverse(&y, &mut ctx)? - &x).abs().max())? < 1e-5);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::flows::layer::{channels, Built, LayerExample, LayerSpec};
use crate::flows::matrix_exp::{check_channels, over_channels, per_sample_logdet};
use crate::flows::transform::{FlowContext, Transform};
use crate::flows::LayerConfig;
use crate::linalg::rank_one::{rank_one_exp_apply, rank_one_exp_inverse, rank_one_exp_logdet};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{Init, Path};
use tch::Tensor;

/// Settings of [`RankOneExp`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RankOneExpConfig {
    /// The number `K` of rank-one factors.
    pub factors: usize,
    /// Entries of `x_i, y_i` start as `N(0, init_scale^2 / C)`, so `|x_i|` and `|y_i|` are about
    /// `init_scale` and `|x_i y_i^T|_2 = |x_i| |y_i|` about `init_scale^2` (near the identity).
    pub init_scale: f64,
}

impl Default for RankOneExpConfig {
    fn default() -> Self {
        RankOneExpConfig {
            factors: 4,
            init_scale: 0.3,
        }
    }
}

impl LayerSpec for RankOneExpConfig {
    fn collection(&self) -> Option<&'static str> {
        Some("mixing")
    }

    fn build(&self, p: &Path, input: &[i64]) -> Result<Built> {
        let c = channels(input, "rank_one_exp")?;
        Ok((Box::new(RankOneExp::new(p, c, *self)?), input.to_vec()))
    }

    fn examples() -> Vec<LayerExample> {
        let config = LayerConfig::RankOneExp(RankOneExpConfig::default());
        vec![
            LayerExample::new("rank_one_exp_dense", config.clone(), &[5]),
            LayerExample::new("rank_one_exp_conv", config, &[3, 4, 4]),
        ]
    }
}

/// `y = exp(x_K y_K^T) ... exp(x_1 y_1^T) x` over channels: a dense layer on `[batch, C]`, a 1x1
/// convolution on `[batch, C, H, W]`. Log-det `H W sum_i y_i^T x_i` per sample.
#[derive(Debug)]
pub struct RankOneExp {
    /// The vectors `x_i` as rows, `[K, C]`, registered as `"x"`.
    x: Tensor,
    /// The vectors `y_i` as rows, `[K, C]`, registered as `"y"`.
    y: Tensor,
    channels: i64,
}

impl RankOneExp {
    /// Registers `x` and `y` (`[factors, channels]`) under `path`.
    pub fn new(path: &Path, channels: i64, config: RankOneExpConfig) -> Result<Self> {
        if channels < 1
            || config.factors < 1
            || !(config.init_scale >= 0.0 && config.init_scale.is_finite())
        {
            return Err(Error::config(format!(
                "rank-one exponential layer needs channels >= 1, factors >= 1 and a finite \
                 init_scale >= 0, got {channels}, {} and {}",
                config.factors, config.init_scale
            )));
        }
        let dims = [config.factors as i64, channels];
        let init = Init::Randn {
            mean: 0.0,
            stdev: config.init_scale / (channels as f64).sqrt(),
        };
        let x = path.f_var("x", &dims, init)?;
        let y = path.f_var("y", &dims, init)?;
        Ok(RankOneExp { x, y, channels })
    }

    /// The vectors `(x_i, y_i)` as rows of two `[K, C]` tensors.
    pub fn vectors(&self) -> (&Tensor, &Tensor) {
        (&self.x, &self.y)
    }

    /// `ln |det W| = sum_i s_i`, the log-det per position (a scalar tensor, differentiable).
    pub fn logdet_per_position(&self) -> Result<Tensor> {
        Ok(rank_one_exp_logdet(&self.x, &self.y)?.f_sum(self.x.kind())?)
    }

    /// The dense `W = prod_i exp(x_i y_i^T)`, `[C, C]` (for tests and analysis; `O(K C^2)`).
    pub fn weight(&self) -> Result<Tensor> {
        let eye = Tensor::f_eye(self.channels, (self.x.kind(), self.x.device()))?;
        // Row j of the result is W e_j, so the result is W^T.
        Ok(self.apply_factors(&eye, false)?.f_tr()?)
    }

    /// The factors applied to vectors `[.., C]`: in order for the forward map, reversed and
    /// inverted for the inverse.
    fn apply_factors(&self, v: &Tensor, inverse: bool) -> Result<Tensor> {
        let mut order: Vec<i64> = (0..self.x.size()[0]).collect();
        if inverse {
            order.reverse();
        }
        let mut h = v.shallow_clone();
        for i in order {
            let (xi, yi) = (self.x.f_get(i)?, self.y.f_get(i)?);
            h = if inverse {
                rank_one_exp_inverse(&xi, &yi, &h)?
            } else {
                rank_one_exp_apply(&xi, &yi, &h)?
            };
        }
        Ok(h)
    }

    fn apply(&self, x: &Tensor, inverse: bool) -> Result<Tensor> {
        check_channels(x, self.channels, &self.x, "rank-one exponential layer")?;
        over_channels(x, |v| self.apply_factors(v, inverse))
    }
}

impl Transform for RankOneExp {
    fn forward(&self, x: &Tensor, _ctx: &mut FlowContext) -> Result<(Tensor, Tensor)> {
        let y = self.apply(x, false)?;
        Ok((y, per_sample_logdet(&self.logdet_per_position()?, x)?))
    }

    fn inverse(&self, y: &Tensor, _ctx: &mut FlowContext) -> Result<Tensor> {
        self.apply(y, true)
    }
}
