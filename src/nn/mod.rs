//! Lipschitz-constrained layers: activations with derivatives, spectrally normalised linear maps and
//! the residual functions `g` built from them; and batch normalisation that data-parallel training
//! synchronises.
pub mod activation;
pub mod batch_norm;
pub mod residual_net;
pub mod spectral;

pub use activation::{Activation, ActivationKind};
pub use batch_norm::{batch_norm1d, batch_norm2d, BatchNorm};
pub use residual_net::{ConvShape, Linearized, ResidualNet};
pub use spectral::{Geometry, SpectralConfig, SpectralLinear};

/// Overwrites the values of `dst` (a parameter or buffer) with `src`, outside the autograd graph.
pub fn assign(dst: &tch::Tensor, src: &tch::Tensor) {
    let mut handle = dst.shallow_clone();
    tch::no_grad(|| handle.copy_(src));
}
