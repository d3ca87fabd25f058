//! An i-ResNet density model over vectors (2-D toys, tabular data): optional ActNorm before each of
//! `blocks` invertible residual blocks with MLP `g` (`d - hidden... - d`), then a base distribution.
//!
//! Parameter names (as in the checkpoint): `actnorms.<i>.{bias,log_scale}`,
//! `blocks.<i>.g.<layer>.{weight,bias,u,v,sigma}` (layers counted with activations, LipSwish's
//! `beta` at the activation's index), `base.{mean,log_std}` for a learned base.

use crate::config::ModelConfig;
use crate::flows::{ActNorm, Flow, IResBlock, Sequential};
use crate::nn::ResidualNet;
use crate::Result;
use tch::nn::VarStore;

/// A vector i-ResNet flow and the store that owns its parameters.
pub struct VectorFlow {
    pub vs: VarStore,
    pub flow: Flow,
}

impl VectorFlow {
    /// Builds the model for `dim`-dimensional data on `device`.
    pub fn new(config: &ModelConfig, dim: i64, device: tch::Device) -> Result<Self> {
        let vs = VarStore::new(device);
        let root = vs.root();
        let mut transform = Sequential::new();
        let mut dims = vec![dim];
        dims.extend(&config.hidden);
        dims.push(dim);
        for i in 0..config.blocks {
            if config.actnorm {
                transform.push(ActNorm::new(&(&root / "actnorms" / i), dim));
            }
            let g = ResidualNet::mlp(
                &(&root / "blocks" / i / "g"),
                &dims,
                config.activation,
                config.spectral,
                false,
            )?;
            transform.push(IResBlock::new(g));
        }
        let base = config.base.build(&(&root / "base"), &[dim]);
        Ok(VectorFlow {
            vs,
            flow: Flow::new(transform, base),
        })
    }
}
