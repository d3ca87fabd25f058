//! The feature network of genflow's sample-quality metrics (SPEC section 6): a small CNN
//! classifier trained by genflow on the data set itself, whose penultimate layer is the feature
//! space of the Frechet distance, KID and precision/recall ("FID-MNIST"-style evaluation, since
//! no Inception weights can be downloaded and they suit small grey images poorly anyway).
//!
//! ```text
//! x [C, H, W] in [0, 1]
//!   -> (conv3x3 -> BatchNorm -> ReLU) x 2 at width w_0 -> max-pool 2
//!   -> (conv3x3 -> BatchNorm -> ReLU) x 2 at width w_1 -> max-pool 2   (one stage per width)
//!   -> flatten -> linear -> ReLU = features f(x) in R^features
//!   -> linear -> logits
//! ```
//!
//! Parameters: `stages.<i>.convs.<j>.{weight,bias}`, `stages.<i>.norms.<j>.*`,
//! `features.{weight,bias}`, `logits.{weight,bias}`.
//!
//! ```
//! use genflow::models::{FeatureNet, FeatureNetConfig};
//! use tch::{nn::VarStore, Device, Kind, Tensor};
//! let vs = VarStore::new(Device::Cpu);
//! let net = FeatureNet::new(&vs.root(), &FeatureNetConfig::default())?;
//! let x = Tensor::rand([3, 1, 28, 28], (Kind::Float, Device::Cpu));
//! assert_eq!(net.features(&x, false)?.size(), [3, 128]);
//! assert_eq!(net.logits(&x, false)?.size(), [3, 10]);
//! # Ok::<(), genflow::Error>(())
//! ```

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, ModuleT, Path};
use tch::Tensor;

/// The configuration of a [`FeatureNet`] (`[model]` of `task = "feature-classifier"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureNetConfig {
    /// `[C, H, W]` of the images; `H` and `W` divisible by `2^stages`.
    pub in_shape: [i64; 3],
    /// Number of classes.
    pub num_classes: i64,
    /// Channels of each stage (two 3x3 convs, then a 2x2 max-pool).
    pub widths: Vec<i64>,
    /// Dimension of the feature space (the penultimate layer).
    pub features: i64,
}

impl Default for FeatureNetConfig {
    /// An MNIST classifier: widths 32-64, 128 features.
    fn default() -> Self {
        FeatureNetConfig {
            in_shape: [1, 28, 28],
            num_classes: 10,
            widths: vec![32, 64],
            features: 128,
        }
    }
}

impl FeatureNetConfig {
    /// Checks sizes, with a message naming the key to change.
    pub fn validate(&self) -> Result<()> {
        let [c, h, w] = self.in_shape;
        let down = 1i64 << self.widths.len().min(30);
        if self.widths.is_empty() || self.widths.iter().any(|&w| w < 1) {
            return Err(Error::config(format!(
                "model.widths must list at least one positive width, got {:?}",
                self.widths
            )));
        }
        if c < 1 || h % down != 0 || w % down != 0 || h < down || w < down {
            return Err(Error::config(format!(
                "model.in_shape {:?}: height and width must be positive multiples of 2^{} (one \
                 max-pool per stage of model.widths)",
                self.in_shape,
                self.widths.len()
            )));
        }
        for &w in self.widths.iter().chain([&self.features]) {
            crate::limits::check(
                "model.widths and model.features",
                w,
                crate::limits::MAX_WIDTH,
            )?;
        }
        for &side in &self.in_shape {
            crate::limits::check(
                "model.in_shape entries",
                side,
                crate::limits::MAX_IMAGE_SIDE,
            )?;
        }
        if self.features < 1 || self.num_classes < 2 {
            return Err(Error::config(format!(
                "model.features must be >= 1 and model.num_classes >= 2, got {} and {}",
                self.features, self.num_classes
            )));
        }
        Ok(())
    }
}

/// One stage: two conv-BN-ReLU layers and a max-pool.
#[derive(Debug)]
struct Stage {
    convs: [nn::Conv2D; 2],
    norms: [nn::BatchNorm; 2],
}

/// The feature network; see the [module documentation](self).
#[derive(Debug)]
pub struct FeatureNet {
    stages: Vec<Stage>,
    features: nn::Linear,
    logits: nn::Linear,
    in_shape: [i64; 3],
}

impl FeatureNet {
    /// Builds the network with its parameters under `p`.
    pub fn new(p: &Path, config: &FeatureNetConfig) -> Result<Self> {
        config.validate()?;
        let conv = nn::ConvConfig {
            padding: 1,
            ..Default::default()
        };
        let mut channels = config.in_shape[0];
        let mut stages = Vec::new();
        for (i, &width) in config.widths.iter().enumerate() {
            let sp = p / "stages" / i;
            let convs = [
                nn::conv2d(&sp / "convs" / 0, channels, width, 3, conv),
                nn::conv2d(&sp / "convs" / 1, width, width, 3, conv),
            ];
            let norms = [
                nn::batch_norm2d(&sp / "norms" / 0, width, Default::default()),
                nn::batch_norm2d(&sp / "norms" / 1, width, Default::default()),
            ];
            stages.push(Stage { convs, norms });
            channels = width;
        }
        let down = 1i64 << config.widths.len();
        let flat = channels * (config.in_shape[1] / down) * (config.in_shape[2] / down);
        Ok(FeatureNet {
            stages,
            features: nn::linear(p / "features", flat, config.features, Default::default()),
            logits: nn::linear(
                p / "logits",
                config.features,
                config.num_classes,
                Default::default(),
            ),
            in_shape: config.in_shape,
        })
    }

    /// The penultimate layer `f(x)` `[n, features]` of intensities `x` `[n, C, H, W]` in `[0, 1]`
    /// (BatchNorm with batch statistics when `train`, running ones otherwise).
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let size = x.size();
        if size.len() != 4 || size[1..] != self.in_shape {
            return Err(Error::shape(format!(
                "the feature network takes images [n, {}, {}, {}], got {size:?}",
                self.in_shape[0], self.in_shape[1], self.in_shape[2]
            )));
        }
        let mut h = x.shallow_clone();
        for stage in &self.stages {
            for (conv, norm) in stage.convs.iter().zip(&stage.norms) {
                h = norm.forward_t(&conv.forward(&h), train).relu();
            }
            h = h.max_pool2d_default(2);
        }
        Ok(self.features.forward(&h.flatten(1, -1)).relu())
    }

    /// Class logits `[n, classes]`.
    pub fn logits(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.logits.forward(&self.features(x, train)?))
    }
}
