//! Flows: the [`Transform`] trait, composition, the invertible layers and the density model.
pub mod actnorm;
pub mod flow;
pub mod iresnet;
pub mod transform;

pub use actnorm::ActNorm;
pub use flow::Flow;
pub use iresnet::IResBlock;
pub use transform::{FixedPointConfig, FlowContext, InverseStats, Sequential, Transform};
