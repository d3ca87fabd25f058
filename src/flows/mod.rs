//! Flows: the [`Transform`] trait, composition, and the invertible layers.
pub mod matrix_exp;
pub mod rank_one_exp;
pub mod transform;

pub use matrix_exp::{MatrixExpConfig, MatrixExpConv1x1};
pub use rank_one_exp::{RankOneExp, RankOneExpConfig};
pub use transform::{FixedPointConfig, FlowContext, InverseStats, Sequential, Transform};
