//! An i-ResNet density model over vectors (2-D toys, tabular data): optional ActNorm before each of
//! `blocks` invertible residual blocks with MLP `g` (`d - hidden... - d`), an optional mixing
//! layer after each block, then a base distribution.
//!
//! Parameter names (as in the checkpoint): `actnorms.<i>.{bias,log_scale}`,
//! `blocks.<i>.g.<layer>.{weight,bias,u,v,sigma}` (layers counted with activations, LipSwish's
//! `beta` at the activation's index), `mixing.<i>.*` for the layer after block `i` (e.g.
//! `mixing.<i>.{x,y}` for rank-one exponentials, `mixing.<i>.a` for a matrix exponential), and
//! `base.{mean,log_std}` for a learned base.
//!
//! ```
//! use genflow::flows::FlowContext;
//! use genflow::linalg::logdet::LogDetEstimator;
//! use genflow::models::{VectorFlow, VectorFlowConfig};
//! use tch::{nn::VarStore, Device, Kind, Tensor};
//!
//! let config: VectorFlowConfig =
//!     toml::from_str("blocks = 2\nhidden = [16, 16]\nactnorm = true\nmixing = \"rank_one_exp\"")?;
//! let vs = VarStore::new(Device::Cpu);
//! let model = VectorFlow::new(&vs.root(), &config, 2)?;
//! let x = Tensor::randn([5, 2], (Kind::Float, Device::Cpu));
//! let log_p = model.flow.log_prob(&x, &mut FlowContext::eval(LogDetEstimator::Exact, 0))?;
//! assert_eq!(log_p.size(), [5]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::distributions::BaseKind;
use crate::flows::layer::optional;
use crate::flows::{build_stack, ActNormConfig, Flow, IResBlockConfig, LayerConfig};
use crate::nn::{ActivationKind, SpectralConfig};
use crate::{limits, Result};
use serde::{Deserialize, Serialize};
use tch::nn::Path;

/// The architecture of a vector i-ResNet flow (`[model]` of `task = "toy-density"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorFlowConfig {
    /// Number of i-ResNet blocks.
    pub blocks: usize,
    /// Hidden widths of each block's MLP `g` (e.g. `[128, 128, 128]` for 2-128-128-128-2).
    pub hidden: Vec<i64>,
    #[serde(default)]
    pub activation: ActivationKind,
    /// ActNorm before every block.
    #[serde(default)]
    pub actnorm: bool,
    #[serde(default)]
    pub base: BaseKind,
    #[serde(default)]
    pub spectral: SpectralConfig,
    /// A layer after every block: a layer name (`"rank_one_exp"`, `"matrix_exp"`,
    /// `"lu_conv1x1"`, `"none"`) or a table (`{ layer = "rank_one_exp", factors = 2 }`).
    #[serde(default, with = "optional", skip_serializing_if = "Option::is_none")]
    pub mixing: Option<LayerConfig>,
}

impl VectorFlowConfig {
    /// Checks the configuration, with a message naming the key to change.
    pub fn validate(&self) -> Result<()> {
        self.spectral
            .validate()
            .map_err(|e| e.context("model.spectral"))?;
        limits::check(
            "model.blocks",
            self.blocks as i64,
            limits::MAX_BLOCKS as i64,
        )?;
        for &w in &self.hidden {
            limits::check("model.hidden widths", w, limits::MAX_WIDTH)?;
        }
        Ok(())
    }

    /// The layers of the flow, in order: `[actnorm] -> block -> [mixing]`, `blocks` times.
    pub fn layers(&self) -> Vec<LayerConfig> {
        let block = LayerConfig::IResBlock(IResBlockConfig {
            hidden: self.hidden.clone(),
            kernels: None,
            activation: self.activation,
            spectral: self.spectral,
            preactivation: false,
        });
        let one_block = self
            .actnorm
            .then_some(LayerConfig::ActNorm(ActNormConfig {}))
            .into_iter()
            .chain(std::iter::once(block))
            .chain(self.mixing.clone());
        let one_block: Vec<LayerConfig> = one_block.collect();
        std::iter::repeat_n(one_block, self.blocks)
            .flatten()
            .collect()
    }
}

/// A vector i-ResNet flow; see the [module documentation](self).
#[derive(Debug)]
pub struct VectorFlow {
    pub flow: Flow,
}

impl VectorFlow {
    /// Builds the model for `dim`-dimensional data with its parameters under `p`.
    pub fn new(p: &Path, config: &VectorFlowConfig, dim: i64) -> Result<Self> {
        config.validate()?;
        let (transform, out) = build_stack(p, &[dim], &config.layers())?;
        let base = config.base.build(&(p / "base"), &out);
        Ok(VectorFlow {
            flow: Flow::new(transform, base),
        })
    }
}
