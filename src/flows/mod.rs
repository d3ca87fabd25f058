//! Flows: the [`Transform`] trait, composition, the invertible layers and the density model.
pub mod actnorm;
pub mod dequantize;
pub mod flow;
pub mod iresnet;
pub mod multiscale;
pub mod padding;
pub mod squeeze;
pub mod transform;

pub use actnorm::ActNorm;
pub use dequantize::{Dequantize, LogitTransform};
pub use flow::Flow;
pub use iresnet::IResBlock;
pub use multiscale::MultiScale;
pub use padding::InjectivePad;
pub use squeeze::Squeeze;
pub use transform::{FixedPointConfig, FlowContext, InverseStats, Sequential, Transform};
