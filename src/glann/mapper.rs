//! IMLE's mapper `T`: an MLP from noise `e ~ N(0, I)` to GLO codes.
//!
//! The official GLANN mapper (`yedidh/glann`, `icp._netT`): bias-free linear layers with batch
//! norm and ReLU between them, `noise_dim -> 128 -> 128 -> n_z`, noise of 32 dimensions for MNIST,
//! Fashion-MNIST and CIFAR-10. Its outputs are not normalised: the generator projects codes onto
//! the unit sphere itself ([`super::Generator::forward`]).
//!
//! ```
//! use genflow::glann::{Mapper, MapperConfig};
//! use genflow::tch::{nn::VarStore, Device, Kind, Tensor};
//! let vs = VarStore::new(Device::Cpu);
//! let t = Mapper::new(&(vs.root() / "mapper"), 64, &MapperConfig::default())?;
//! let e = Tensor::randn([10, t.noise_dim()], (Kind::Float, Device::Cpu));
//! assert_eq!(t.forward(&e, false)?.size(), [10, 64]);
//! # Ok::<(), genflow::Error>(())
//! ```

use super::generator::{batch_norm, linear};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT, Path};
use tch::Tensor;

/// The mapper's layout (`[model.mapper]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapperConfig {
    /// Dimension of the noise `e`.
    #[serde(default = "default_noise_dim")]
    pub noise_dim: i64,
    /// Widths of the hidden layers.
    #[serde(default = "default_hidden")]
    pub hidden: Vec<i64>,
    /// Batch norm after every hidden linear layer.
    #[serde(default = "yes")]
    pub batch_norm: bool,
}

fn default_noise_dim() -> i64 {
    32
}

fn default_hidden() -> Vec<i64> {
    vec![128, 128]
}

fn yes() -> bool {
    true
}

impl Default for MapperConfig {
    /// The official mapper: noise 32, hidden `[128, 128]`, batch norm.
    fn default() -> Self {
        MapperConfig {
            noise_dim: default_noise_dim(),
            hidden: default_hidden(),
            batch_norm: true,
        }
    }
}

impl MapperConfig {
    /// Checks sizes; the message names the key.
    pub fn validate(&self) -> Result<()> {
        if self.noise_dim < 1 || self.hidden.iter().any(|&h| h < 1) {
            return Err(Error::config(format!(
                "model.mapper: noise_dim and hidden widths must be positive, got noise_dim {} and \
                 hidden {:?}",
                self.noise_dim, self.hidden
            )));
        }
        Ok(())
    }
}

/// The mapper network (see the module docs).
#[derive(Debug)]
pub struct Mapper {
    layers: Vec<(nn::Linear, Option<nn::BatchNorm>)>,
    output: nn::Linear,
    noise_dim: i64,
}

impl Mapper {
    /// A mapper from `config.noise_dim`-dimensional noise to `n_z`-dimensional codes, its
    /// parameters under `p`.
    pub fn new(p: &Path, n_z: i64, config: &MapperConfig) -> Result<Self> {
        config.validate()?;
        let mut fan_in = config.noise_dim;
        let mut layers = Vec::new();
        for (k, &width) in config.hidden.iter().enumerate() {
            let norm = config
                .batch_norm
                .then(|| batch_norm(&(p / format!("norm{k}")), width, false));
            layers.push((linear(&(p / format!("linear{k}")), fan_in, width), norm));
            fan_in = width;
        }
        Ok(Mapper {
            layers,
            output: linear(&(p / "output"), fan_in, n_z),
            noise_dim: config.noise_dim,
        })
    }

    /// Codes `[N, n_z]` of noise `e` `[N, noise_dim]`; `train`: batch norm with batch statistics
    /// (updating the running ones).
    pub fn forward(&self, e: &Tensor, train: bool) -> Result<Tensor> {
        let size = e.size();
        if size.len() != 2 || size[1] != self.noise_dim || size[0] < 1 {
            return Err(Error::shape(format!(
                "the mapper takes noise [N >= 1, {}], got {size:?}",
                self.noise_dim
            )));
        }
        let mut h = e.shallow_clone();
        for (linear, norm) in &self.layers {
            h = linear.forward_t(&h, train);
            if let Some(norm) = norm {
                h = norm.forward_t(&h, train);
            }
            h = h.f_relu()?;
        }
        Ok(self.output.forward_t(&h, train))
    }

    /// The noise dimension.
    pub fn noise_dim(&self) -> i64 {
        self.noise_dim
    }
}
