//! The i-ResNet classifier (Behrmann et al. 2019, section 5.1; official `conv_iResNet` with
//! `inj_pad`; SPEC section 1): an invertible feature map followed by a small head.
//!
//! ```text
//! x [C, H, W] -> injective zero padding to C + k channels
//!   -> stage 0: ([ActNorm] -> i-ResNet block) x n_0           on [C + k, H, W]
//!   -> squeeze -> stage 1: (...) x n_1                         on [4(C + k), H/2, W/2]
//!   -> ... = features f(x)
//! head: BatchNorm -> ReLU -> global average pool -> linear -> logits
//! ```
//!
//! Squeezing is i-ResNet's invertible downsampling (stride 2 without losing information). Each block
//! is `y = x + g(x)` with a spectrally normalised conv `g` (kernels 3-1-3, hidden width per stage);
//! as in the official code, `g` starts with the activation except in the very first block, which
//! sees the raw (padded) input. The features are computed without log-determinants; they stay
//! invertible ([`IResNetClassifier::invert_features`]: fixed-point inversion of every block,
//! inverse ActNorm and squeeze, and dropping the padding after checking it is zero).
//!
//! Parameters: `stages.<i>.actnorms.<j>.*`, `stages.<i>.blocks.<j>.g.<k>.*`, `head.norm.*`
//! (BatchNorm, with running statistics) and `head.linear.{weight,bias}`.
//!
//! The head's BatchNorm updates its running statistics with momentum [`HEAD_NORM_MOMENTUM`] = 0.9
//! (`running <- 0.1 running + 0.9 batch`), as the official code does: i-ResNet features are large
//! (standard deviations of tens) and drift quickly while the learning rate is high, so running
//! averages over many batches lag the current network; with PyTorch's default 0.1 the test accuracy
//! in evaluation mode trailed the batch-statistics accuracy by up to 15 points.
//!
//! ```
//! use genflow::flows::FlowContext;
//! use genflow::linalg::logdet::LogDetEstimator;
//! use genflow::models::{ClassifierConfig, IResNetClassifier};
//! use tch::{nn::VarStore, Device, Kind, Tensor};
//!
//! let config = ClassifierConfig {
//!     in_shape: [1, 8, 8],
//!     num_classes: 10,
//!     pad_channels: 3,
//!     stages: vec![1, 1],
//!     hidden: vec![8, 16],
//!     ..ClassifierConfig::default()
//! };
//! let vs = VarStore::new(Device::Cpu);
//! let net = IResNetClassifier::new(&vs.root(), &config)?;
//! let x = Tensor::rand([2, 1, 8, 8], (Kind::Float, Device::Cpu));
//! assert_eq!(net.forward_t(&x, false)?.size(), [2, 10]);
//! let f = net.features(&x, false)?;
//! assert_eq!(f.size(), [2, 16, 4, 4]);
//! let back = net.invert_features(&f, &mut FlowContext::eval(LogDetEstimator::Exact, 0))?;
//! assert!((back - x).abs().max().double_value(&[]) < 1e-4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::flows::{
    build_stack, ActNormConfig, FlowContext, IResBlockConfig, InjectivePad, InjectivePadConfig,
    LayerConfig, MultiScale, Sequential, SqueezeConfig, Transform,
};
use crate::nn::{ActivationKind, ResidualNet, SpectralConfig};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{BatchNorm, Linear, Module, ModuleT, Path};
use tch::Tensor;

/// The configuration of an [`IResNetClassifier`]; see the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifierConfig {
    /// `[C, H, W]` of the images; `H`, `W` divisible by `2^(stages - 1)`.
    pub in_shape: [i64; 3],
    /// Number of classes.
    pub num_classes: i64,
    /// Zero channels added to the input (`k` of the injective padding).
    pub pad_channels: i64,
    /// i-ResNet blocks per stage (each at least 1); squeezes between stages.
    pub stages: Vec<usize>,
    /// Hidden channels of `g` in each stage (one per stage).
    pub hidden: Vec<i64>,
    /// Odd kernel sizes of the convs of `g`.
    pub kernels: Vec<i64>,
    /// The 1-Lipschitz activation of `g` (ReLU is allowed here: no log-det is needed).
    pub activation: ActivationKind,
    /// An ActNorm before every block.
    pub actnorm: bool,
    /// Spectral normalisation (`c`, power iterations).
    pub spectral: SpectralConfig,
}

impl Default for ClassifierConfig {
    /// The official CIFAR-10 classifier (SPEC section 1): 3 -> 16 channels by padding, blocks
    /// 7-7-7, hidden 32-64-128, kernels 3-1-3, ELU, ActNorm, `c = 0.9`.
    fn default() -> Self {
        ClassifierConfig {
            in_shape: [3, 32, 32],
            num_classes: 10,
            pad_channels: 13,
            stages: vec![7, 7, 7],
            hidden: vec![32, 64, 128],
            kernels: vec![3, 1, 3],
            activation: ActivationKind::Elu,
            actnorm: true,
            spectral: SpectralConfig::default(),
        }
    }
}

impl ClassifierConfig {
    /// Checks the configuration, with a message saying what to change.
    pub fn validate(&self) -> Result<()> {
        if self.stages.is_empty() || self.stages.contains(&0) {
            return Err(Error::config(format!(
                "classifier stages must list at least one stage with at least one block each, got {:?}",
                self.stages
            )));
        }
        if self.hidden.len() != self.stages.len() || self.hidden.iter().any(|&h| h < 1) {
            return Err(Error::config(format!(
                "classifier hidden must give one positive width per stage ({} stages), got {:?}",
                self.stages.len(),
                self.hidden
            )));
        }
        if self.num_classes < 2 {
            return Err(Error::config(format!(
                "a classifier needs at least 2 classes, got {}",
                self.num_classes
            )));
        }
        InjectivePad::new(self.in_shape[0], self.pad_channels)?;
        self.spectral.validate()?;
        let widest = self.hidden.iter().copied().max().unwrap_or(1);
        crate::models::image_flow::check_sizes(&self.in_shape, widest, self.stages.iter().sum())?;
        self.stage_shapes().map(|_| ())
    }

    /// `[C, H, W]` at the input of each stage (after padding and squeezes).
    pub fn stage_shapes(&self) -> Result<Vec<[i64; 3]>> {
        let [c, h, w] = self.in_shape;
        MultiScale::level_shapes([c + self.pad_channels, h, w], self.stages.len(), false)
    }

    /// The layers of stage `i`: a squeeze (after the first stage), then
    /// `([actnorm] -> block) x stages[i]`, every block but the very first one starting with its
    /// activation (the official code's first block sees the raw padded input).
    pub fn stage_layers(&self, i: usize) -> Vec<LayerConfig> {
        let squeeze = (i > 0).then_some(LayerConfig::Squeeze(SqueezeConfig {}));
        let blocks = (0..self.stages[i]).flat_map(|j| {
            let block = LayerConfig::IResBlock(IResBlockConfig {
                hidden: vec![self.hidden[i]; self.kernels.len().saturating_sub(1)],
                kernels: Some(self.kernels.clone()),
                activation: self.activation,
                spectral: self.spectral,
                preactivation: i > 0 || j > 0,
            });
            self.actnorm
                .then_some(LayerConfig::ActNorm(ActNormConfig {}))
                .into_iter()
                .chain(std::iter::once(block))
        });
        squeeze.into_iter().chain(blocks).collect()
    }
}

/// BatchNorm momentum of the head (official `conv_iResNet._make_classifier`).
pub const HEAD_NORM_MOMENTUM: f64 = 0.9;

/// An i-ResNet classifier; see the [module documentation](self).
#[derive(Debug)]
pub struct IResNetClassifier {
    /// The invertible feature map: padding, then the stages.
    features: Sequential,
    norm: BatchNorm,
    linear: Linear,
    config: ClassifierConfig,
}

impl IResNetClassifier {
    /// Builds the classifier with its parameters under `p`: the padding, stage `i` under
    /// `stages.<i>`, and the head under `head`.
    pub fn new(p: &Path, config: &ClassifierConfig) -> Result<Self> {
        config.validate()?;
        let pad = LayerConfig::InjectivePad(InjectivePadConfig {
            extra_channels: config.pad_channels,
        });
        let (mut features, mut shape) = build_stack(p, &config.in_shape, &[pad])?;
        for i in 0..config.stages.len() {
            let (stage, out) = build_stack(&(p / "stages" / i), &shape, &config.stage_layers(i))?;
            features.push(stage);
            shape = out;
        }
        let channels = shape[0];
        let norm = tch::nn::batch_norm2d(
            p / "head" / "norm",
            channels,
            tch::nn::BatchNormConfig {
                momentum: HEAD_NORM_MOMENTUM,
                ..Default::default()
            },
        );
        let linear = tch::nn::linear(
            p / "head" / "linear",
            channels,
            config.num_classes,
            Default::default(),
        );
        Ok(IResNetClassifier {
            features,
            norm,
            linear,
            config: config.clone(),
        })
    }

    /// The configuration the classifier was built from.
    pub fn config(&self) -> &ClassifierConfig {
        &self.config
    }

    /// The residual functions of all blocks (for Lipschitz diagnostics and spectral refinement).
    pub fn residual_nets(&self) -> Vec<&ResidualNet> {
        self.features.residual_nets()
    }

    /// The invertible feature map `f(x)`, shape `[B, 4^(S-1) (C + k), H / 2^(S-1), W / 2^(S-1)]`.
    /// Training mode runs the power iterations and initialises ActNorm from the first batch.
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let size = x.size();
        if size.len() != 4 || size[1..] != self.config.in_shape {
            return Err(Error::shape(format!(
                "classifier over images {:?} got a batch of shape {size:?}",
                self.config.in_shape
            )));
        }
        let mut ctx = FlowContext::without_logdet(train);
        Ok(self.features.forward(x, &mut ctx)?.0)
    }

    /// `x = f^{-1}(features)`: every layer inverted in reverse order (blocks by the fixed-point
    /// iteration of `ctx.inverse`, whose statistics `ctx` records). Errors when the padded channels
    /// do not come back as zeros, i.e. `features` is not in the image of the feature map.
    pub fn invert_features(&self, features: &Tensor, ctx: &mut FlowContext) -> Result<Tensor> {
        self.features.inverse(features, ctx)
    }

    /// Logits `[B, classes]`: features -> BatchNorm (batch statistics in training mode, running ones
    /// otherwise) -> ReLU -> global average pool -> linear.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let f = self.features(x, train)?;
        let pooled =
            self.norm
                .forward_t(&f, train)
                .relu()
                .mean_dim([2, 3].as_slice(), false, f.kind());
        Ok(self.linear.forward(&pooled))
    }
}
