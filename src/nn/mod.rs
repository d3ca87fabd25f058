//! Lipschitz-constrained layers: activations with derivatives, spectrally normalised linear maps and
//! the residual functions `g` built from them.
pub mod activation;
