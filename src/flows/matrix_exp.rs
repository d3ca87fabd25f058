//! The matrix-exponential linear layer `y = exp(A) x` over channels (SPEC section 2; the
//! always-invertible matrix of Su 2019-02-18), and the channel helpers it shares with
//! [`crate::flows::rank_one_exp`].
//!
//! On `[batch, C]` it is a dense layer; on `[batch, C, H, W]` (or any `[batch, C, ..]`) it is a
//! 1x1 convolution: the same `C x C` matrix applied at every position. `W = exp(A)` is invertible
//! for every `A`, with `W^{-1} = exp(-A)` and `ln |det W| = ln det W = tr A`, so the log-det per
//! sample is `(H W) tr A` at the cost of a trace. `exp` runs by scaling and squaring
//! ([`crate::linalg::expm`]) with autodiff through the squarings.
//!
//! ```
//! use genflow::flows::{FlowContext, MatrixExpConfig, MatrixExpConv1x1, Transform};
//! use genflow::linalg::logdet::LogDetEstimator;
//! use tch::{nn::VarStore, Device, Kind, Tensor};
//! let vs = VarStore::new(Device::Cpu);
//! let layer = MatrixExpConv1x1::new(&(vs.root() / "mexp"), 3, MatrixExpConfig::default())?;
//! let mut ctx = FlowContext::eval(LogDetEstimator::Exact, 0);
//! let x = Tensor::randn([2, 3, 4, 4], (Kind::Float, Device::Cpu));
//! let (y, logdet) = layer.forward(&x, &mut ctx)?;
//! let back = layer.inverse(&y, &mut ctx)?;
//! assert!(f64::try_from((back - &x).abs().max())? < 1e-5);
//! assert_eq!(logdet.size(), vec![2]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::flows::layer::{channels, Built, LayerExample, LayerSpec};
use crate::flows::transform::{FlowContext, Transform};
use crate::flows::LayerConfig;
use crate::linalg::batch::trace;
use crate::linalg::expm::expm;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{Init, Path};
use tch::Tensor;

/// Checks that `x` is `[batch, channels, ..]` of the parameters' dtype and device.
pub fn check_channels(x: &Tensor, channels: i64, param: &Tensor, layer: &str) -> Result<()> {
    let size = x.size();
    if size.len() < 2 || size[1] != channels {
        return Err(Error::shape(format!(
            "{layer} expects [batch, {channels}, ..] (channels in dim 1), got {size:?}"
        )));
    }
    if x.kind() != param.kind() || x.device() != param.device() {
        return Err(Error::shape(format!(
            "{layer} has {:?} parameters on {:?} but the input is {:?} on {:?}; convert the input \
             or the VarStore (vs.set_kind / to_device)",
            param.kind(),
            param.device(),
            x.kind(),
            x.device()
        )));
    }
    Ok(())
}

/// The number of positions a channel map acts on per sample: `H W` for `[batch, C, H, W]`, 1 for
/// `[batch, C]` (the product of the dimensions after the channel dimension).
pub fn positions(x: &Tensor) -> i64 {
    x.size().iter().skip(2).product()
}

/// Applies `f` to `x` with its channel dimension (dim 1) moved last, so that `f` acts on vectors
/// `[.., C]` at every position, and moves it back: the one piece shared by dense layers and 1x1
/// convolutions.
pub fn over_channels(x: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    Ok(f(&x.f_movedim(1, -1)?)?.f_movedim(-1, 1)?)
}

/// The per-sample log-determinant `[batch]`: `positions(x)` times the per-position value `ld`.
pub fn per_sample_logdet(ld: &Tensor, x: &Tensor) -> Result<Tensor> {
    let batch = x.size()[0];
    Ok(ld
        .f_mul_scalar(positions(x))?
        .f_expand([batch], false)?
        .f_contiguous()?)
}

/// Settings of [`MatrixExpConv1x1`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatrixExpConfig {
    /// Entries of `A` start as `N(0, init_scale^2 / C)`, so `|A|_2` is about `2 init_scale`
    /// (near the identity for small values; 0 starts at exactly `W = I`).
    pub init_scale: f64,
}

impl Default for MatrixExpConfig {
    fn default() -> Self {
        MatrixExpConfig { init_scale: 0.1 }
    }
}

impl LayerSpec for MatrixExpConfig {
    fn collection(&self) -> Option<&'static str> {
        Some("mixing")
    }

    fn build(&self, p: &Path, input: &[i64]) -> Result<Built> {
        let c = channels(input, "matrix_exp")?;
        Ok((Box::new(MatrixExpConv1x1::new(p, c, *self)?), input.to_vec()))
    }

    fn examples() -> Vec<LayerExample> {
        let config = LayerConfig::MatrixExpConv1x1(MatrixExpConfig::default());
        vec![
            LayerExample::new("matrix_exp_dense", config.clone(), &[5]),
            LayerExample::new("matrix_exp_conv", config, &[3, 4, 4]),
        ]
    }
}

/// `y = exp(A) x` over channels: a dense layer on `[batch, C]`, a 1x1 convolution on
/// `[batch, C, H, W]`. Log-det `H W tr A` per sample; inverse `exp(-A)`.
#[derive(Debug)]
pub struct MatrixExpConv1x1 {
    /// The generator `A`, `[C, C]`, registered as `"a"`.
    a: Tensor,
    channels: i64,
}

impl MatrixExpConv1x1 {
    /// Registers `A` (`[channels, channels]`) as `"a"` under `path`.
    pub fn new(path: &Path, channels: i64, config: MatrixExpConfig) -> Result<Self> {
        if channels < 1 || !(config.init_scale >= 0.0 && config.init_scale.is_finite()) {
            return Err(Error::config(format!(
                "matrix-exp layer needs channels >= 1 and a finite init_scale >= 0, got {channels} \
                 and {}",
                config.init_scale
            )));
        }
        let stdev = config.init_scale / (channels as f64).sqrt();
        let a = path.f_var("a", &[channels, channels], Init::Randn { mean: 0.0, stdev })?;
        Ok(MatrixExpConv1x1 { a, channels })
    }

    /// The generator `A`.
    pub fn generator(&self) -> &Tensor {
        &self.a
    }

    /// `W = exp(A)` (differentiable).
    pub fn weight(&self) -> Result<Tensor> {
        expm(&self.a)
    }

    /// `ln |det W| = tr A`, the log-det per position (a scalar tensor, differentiable).
    pub fn logdet_per_position(&self) -> Result<Tensor> {
        trace(&self.a)
    }

    fn apply(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        check_channels(x, self.channels, &self.a, "matrix-exp layer")?;
        over_channels(x, |v| Ok(v.f_matmul(&w.f_tr()?)?))
    }
}

impl Transform for MatrixExpConv1x1 {
    fn forward(&self, x: &Tensor, _ctx: &mut FlowContext) -> Result<(Tensor, Tensor)> {
        let y = self.apply(x, &self.weight()?)?;
        Ok((y, per_sample_logdet(&self.logdet_per_position()?, x)?))
    }

    fn inverse(&self, y: &Tensor, _ctx: &mut FlowContext) -> Result<Tensor> {
        self.apply(y, &expm(&self.a.f_neg()?)?)
    }
}
