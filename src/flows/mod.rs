//! Flows: the [`Transform`] trait, composition, and the invertible layers.
pub mod transform;

pub use transform::{FixedPointConfig, FlowContext, InverseStats, Sequential, Transform};
