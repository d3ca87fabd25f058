//! The i-ResNet / Residual Flow density model for images (Behrmann et al. 2019, section 5.3; Chen et
//! al. 2019, Residual Flows, section 6 and appendix; SPEC section 1).
//!
//! Layout, for `scales = [n_0, n_1, ...]`:
//!
//! ```text
//! x_scaled in [0,1)^{C x H x W}
//!   -> [logit transform]                                   (if logit_alpha is set)
//!   -> scale 0: ([ActNorm] -> i-ResNet block) x n_0        (blocks on [C, H, W])
//!   -> squeeze [-> factor-out half the channels]           (between scales)
//!   -> scale 1: ([ActNorm] -> i-ResNet block) x n_1        (on [4C or 2C, H/2, W/2])
//!   -> ... -> flat latent z in R^D  ~  base N(0, I) or a learned diagonal Gaussian
//! ```
//!
//! Each block is `y = x + g(x)` with the conv `g = conv_k3 o phi o conv_k2 o phi o conv_k1 o phi`
//! (kernels `[k1, k2, k3]` = 3-1-3 by default, `phi` applied first: pre-activation as in Residual
//! Flows), every conv
//! spectrally normalised at its scale's spatial size. `log p(x) = log p_z(f(x)) + sum ln|det|`;
//! the blocks' log-dets come from the estimator of the [`FlowContext`].
//!
//! Parameters (in the [`tch::nn::VarStore`] under the path given to [`ImageFlow::new`]):
//! `scales.<i>.actnorms.<j>.{bias,log_scale,initialized}`,
//! `scales.<i>.blocks.<j>.g.<k>.{weight,bias,u,v,sigma}` for the convs (`k` odd) and
//! `scales.<i>.blocks.<j>.g.<k>.beta` for LipSwish (`k` even), and `base.{mean,log_std}` for the
//! learned Gaussian base.
//!
//! Images enter as integer levels (`uint8` or integer-valued floats) for [`ImageFlow::bits_per_dim`],
//! which dequantises them (`(x + u) / 256`, [`Dequantize`]), or already scaled to `[0, 1)` for
//! [`ImageFlow::log_prob`], [`ImageFlow::bits_per_dim_dequantized`] and
//! [`ImageFlow::reconstruct`]; [`ImageFlow::sample`] returns scaled images.
//!
//! ```
//! use genflow::flows::FlowContext;
//! use genflow::linalg::logdet::LogDetEstimator;
//! use genflow::models::{ImageFlow, ImageFlowConfig};
//! use tch::{nn::VarStore, Device, Kind, Tensor};
//!
//! let config: ImageFlowConfig = toml::from_str(
//!     "in_shape = [1, 4, 4]\nscales = [1, 1]\nhidden = 8\nfactor_out = true\nlogit_alpha = 1e-6",
//! )?;
//! let vs = VarStore::new(Device::Cpu);
//! let model = ImageFlow::new(&vs.root(), &config)?;
//! let pixels = Tensor::randint(256, [2, 1, 4, 4], (Kind::Uint8, Device::Cpu));
//! let mut ctx = FlowContext::train(LogDetEstimator::default(), 0);
//! let bpd = model.bits_per_dim(&pixels, &mut ctx)?;
//! assert_eq!(bpd.size(), [2]);
//! let samples = model.sample(3, 0.7, &mut FlowContext::eval(LogDetEstimator::default(), 0))?;
//! assert_eq!(samples.size(), [3, 1, 4, 4]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::distributions::BaseKind;
use crate::flows::layer::optional;
use crate::flows::{
    build_stack, ActNormConfig, Dequantize, Flow, FlowContext, IResBlockConfig, LayerConfig,
    LogitConfig, LogitTransform, MultiScale, MultiScaleConfig, Transform,
};
use crate::metrics;
use crate::nn::{ActivationKind, ResidualNet, SpectralConfig};
use crate::{limits, Error, Result};
use serde::{Deserialize, Serialize};
use tch::{nn::Path, Device, Kind, Tensor};

/// The configuration of an [`ImageFlow`]; see the [module documentation](self) for the layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageFlowConfig {
    /// `[C, H, W]` of the images; `H` and `W` divisible by `2^(scales - 1)`.
    pub in_shape: [i64; 3],
    /// i-ResNet blocks per scale (each at least 1); squeezes between scales.
    pub scales: Vec<usize>,
    /// Channels of the hidden layers of every `g`.
    pub hidden: i64,
    /// Odd kernel sizes of the convs of `g`, e.g. `[3, 1, 3]`.
    pub kernels: Vec<i64>,
    /// The 1-Lipschitz activation of `g` (smooth ones only: the log-det needs `phi'`).
    pub activation: ActivationKind,
    /// An ActNorm before every block.
    pub actnorm: bool,
    /// Factor out half the channels after every squeeze.
    pub factor_out: bool,
    /// `alpha` of the logit transform applied first, if any (1e-6 MNIST, 0.05 otherwise).
    pub logit_alpha: Option<f64>,
    /// Spectral normalisation (`c`, power iterations).
    pub spectral: SpectralConfig,
    /// The base distribution.
    pub base: BaseKind,
    /// Levels per entry of the discrete data (256 for 8-bit images).
    pub levels: u32,
    /// A layer over channels after every block, e.g. a matrix exponential (SPEC section 2): a
    /// layer name (`"matrix_exp"`, `"rank_one_exp"`, `"lu_conv1x1"`, `"none"`) or a table.
    #[serde(with = "optional", skip_serializing_if = "Option::is_none")]
    pub mixing: Option<LayerConfig>,
}

impl Default for ImageFlowConfig {
    /// A small MNIST model: two scales of 4 blocks, hidden 64, kernels 3-1-3, LipSwish, ActNorm,
    /// no logit, `c = 0.9`, standard normal base.
    fn default() -> Self {
        ImageFlowConfig {
            in_shape: [1, 28, 28],
            scales: vec![4, 4],
            hidden: 64,
            kernels: vec![3, 1, 3],
            activation: ActivationKind::Lipswish,
            actnorm: true,
            factor_out: false,
            logit_alpha: None,
            spectral: SpectralConfig::default(),
            base: BaseKind::StandardNormal,
            levels: 256,
            mixing: None,
        }
    }
}

impl ImageFlowConfig {
    /// Checks the configuration, with a message saying what to change.
    pub fn validate(&self) -> Result<()> {
        if self.scales.is_empty() || self.scales.contains(&0) {
            return Err(Error::config(format!(
                "image flow scales must list at least one scale with at least one block each, got {:?}",
                self.scales
            )));
        }
        if self.activation == ActivationKind::Relu {
            return Err(Error::config(
                "ReLU is not smooth, so the log-det of a density model is undefined on a set the \
                 training meets; use lipswish, elu or softplus",
            ));
        }
        if let Some(alpha) = self.logit_alpha {
            LogitTransform::new(alpha)?;
        }
        Dequantize::new(self.levels)?;
        self.spectral.validate()?;
        if self.kernels.is_empty() || self.kernels.iter().any(|k| k % 2 == 0 || *k < 1) {
            return Err(Error::config(format!(
                "image flow kernels must be odd sizes (at least one), got {:?}",
                self.kernels
            )));
        }
        check_sizes(&self.in_shape, self.hidden, self.scales.iter().sum())?;
        MultiScale::level_shapes(self.in_shape, self.scales.len(), self.factor_out)?;
        Ok(())
    }

    /// The layers of the flow: `[logit] -> multi_scale` whose level `i` is
    /// `([actnorm] -> block -> [mixing]) x scales[i]` (blocks with the activation first).
    pub fn layers(&self) -> Vec<LayerConfig> {
        let block = LayerConfig::IResBlock(IResBlockConfig {
            hidden: vec![self.hidden; self.kernels.len() - 1],
            kernels: Some(self.kernels.clone()),
            activation: self.activation,
            spectral: self.spectral,
            preactivation: true,
        });
        let one_block: Vec<LayerConfig> = self
            .actnorm
            .then_some(LayerConfig::ActNorm(ActNormConfig {}))
            .into_iter()
            .chain(std::iter::once(block))
            .chain(self.mixing.clone())
            .collect();
        let levels = self
            .scales
            .iter()
            .map(|&n| {
                std::iter::repeat_n(one_block.clone(), n)
                    .flatten()
                    .collect()
            })
            .collect();
        let logit = self
            .logit_alpha
            .map(|alpha| LayerConfig::LogitTransform(LogitConfig { alpha }));
        logit
            .into_iter()
            .chain(std::iter::once(LayerConfig::MultiScale(MultiScaleConfig {
                factor_out: self.factor_out,
                levels,
            })))
            .collect()
    }

    /// `D = C H W`.
    pub fn dims(&self) -> i64 {
        self.in_shape.iter().product()
    }
}

/// Checks an image model's sizes against [`crate::limits`]: `model.in_shape`, the widest hidden
/// layer and the number of blocks.
pub(crate) fn check_sizes(in_shape: &[i64; 3], hidden: i64, blocks: usize) -> Result<()> {
    for &side in in_shape {
        limits::check("model.in_shape entries", side, limits::MAX_IMAGE_SIDE)?;
    }
    limits::check("model.hidden", hidden, limits::MAX_WIDTH)?;
    limits::check(
        "the number of blocks",
        blocks as i64,
        limits::MAX_BLOCKS as i64,
    )
}

/// An image density model; see the [module documentation](self).
#[derive(Debug)]
pub struct ImageFlow {
    /// The flow `x_scaled -> z` and its base distribution.
    pub flow: Flow,
    config: ImageFlowConfig,
    dequantize: Dequantize,
}

impl ImageFlow {
    /// Builds the model with its parameters under `p`.
    pub fn new(p: &Path, config: &ImageFlowConfig) -> Result<Self> {
        config.validate()?;
        let (transform, out) = build_stack(p, &config.in_shape, &config.layers())?;
        let base = config.base.build(&(p / "base"), &out);
        Ok(ImageFlow {
            flow: Flow::new(transform, base),
            config: config.clone(),
            dequantize: Dequantize::new(config.levels)?,
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &ImageFlowConfig {
        &self.config
    }

    /// The residual functions of all blocks (for Lipschitz diagnostics and spectral refinement).
    pub fn residual_nets(&self) -> Vec<&ResidualNet> {
        self.flow.transform.residual_nets()
    }

    /// The dtype and device of the parameters.
    fn options(&self) -> Result<(Kind, Device)> {
        self.residual_nets()
            .first()
            .and_then(|g| g.linear_layers().next())
            .map(|l| (l.weight.kind(), l.weight.device()))
            .ok_or_else(|| Error::config("image flow has no blocks"))
    }

    /// Checks that `x` is a batch of images of the configured shape.
    fn check_images(&self, x: &Tensor) -> Result<()> {
        let size = x.size();
        if size.len() != 4 || size[1..] != self.config.in_shape {
            return Err(Error::shape(format!(
                "image flow over images {:?} got a batch of shape {size:?} (expected [batch, C, H, W])",
                self.config.in_shape
            )));
        }
        Ok(())
    }

    /// `log p(x)` per sample for images `x` scaled to `[0, 1)` (the density on the scaled cube).
    pub fn log_prob(&self, x: &Tensor, ctx: &mut FlowContext) -> Result<Tensor> {
        self.check_images(x)?;
        self.flow.log_prob(x, ctx)
    }

    /// Bits per dimension per sample of integer images `x` (levels `0..L-1`, any dtype): dequantises
    /// `(x + u) / L` (one fresh `u` per call) and applies [`metrics::bits_per_dim`].
    pub fn bits_per_dim(&self, x: &Tensor, ctx: &mut FlowContext) -> Result<Tensor> {
        self.check_images(x)?;
        let (kind, device) = self.options()?;
        let scaled = self.dequantize.dequantize(&x.to_device(device), kind)?;
        self.bits_per_dim_dequantized(&scaled, ctx)
    }

    /// Bits per dimension per sample of images already dequantised and scaled to `[0, 1)`:
    /// `(-log p(x) / D + ln L) / ln 2`.
    pub fn bits_per_dim_dequantized(&self, x: &Tensor, ctx: &mut FlowContext) -> Result<Tensor> {
        let (lo, hi) = tch::no_grad(|| (x.min().double_value(&[]), x.max().double_value(&[])));
        if !(lo >= 0.0 && hi <= 1.0) {
            return Err(Error::config(format!(
                "bits/dim of dequantised data expects values scaled to [0, 1], got [{lo}, {hi}]; \
                 pass integer levels to bits_per_dim instead"
            )));
        }
        let log_prob = self.log_prob(x, ctx)?;
        Ok(metrics::bits_per_dim(
            &log_prob,
            self.config.dims(),
            self.config.levels,
        ))
    }

    /// `n` samples `f^{-1}(z)`, `z ~ base` at `temperature` (standard deviation scaled by it), as
    /// images scaled to `[0, 1)` (up to the model's fit), shape `[n, C, H, W]`.
    pub fn sample(&self, n: i64, temperature: f64, ctx: &mut FlowContext) -> Result<Tensor> {
        if n < 1 || !(temperature >= 0.0 && temperature.is_finite()) {
            return Err(Error::config(format!(
                "sampling needs n >= 1 and a finite temperature >= 0, got n = {n}, temperature = {temperature}"
            )));
        }
        let (kind, device) = self.options()?;
        tch::no_grad(|| self.flow.sample(n, temperature, kind, device, ctx))
    }

    /// `f^{-1}(f(x))` for scaled images `x` and the largest absolute reconstruction error.
    pub fn reconstruct(&self, x: &Tensor, ctx: &mut FlowContext) -> Result<(Tensor, f64)> {
        self.check_images(x)?;
        tch::no_grad(|| {
            let (z, _) = self.flow.transform.forward(x, ctx)?;
            let x_hat = self.flow.transform.inverse(&z, ctx)?;
            let err = (&x_hat - x).abs().max().double_value(&[]);
            Ok((x_hat, err))
        })
    }
}
