//! Flows: the [`Transform`] trait, composition, the invertible layers and the density model.
//!
//! | layer | map | log-det |
//! |---|---|---|
//! | [`IResBlock`] | `x + g(x)`, `Lip(g) < 1` | exact / series / Russian roulette |
//! | [`ActNorm`] | `(x + b) e^s` per channel | `H W sum s` |
//! | [`RankOneExp`] | `prod_i exp(x_i y_i^T)` over channels | `H W sum_i y_i^T x_i` |
//! | [`MatrixExpConv1x1`] | `exp(A)` over channels | `H W tr A` |
pub mod actnorm;
pub mod flow;
pub mod iresnet;
pub mod matrix_exp;
pub mod rank_one_exp;
pub mod transform;

pub use actnorm::ActNorm;
pub use flow::Flow;
pub use iresnet::IResBlock;
pub use matrix_exp::{MatrixExpConfig, MatrixExpConv1x1};
pub use rank_one_exp::{RankOneExp, RankOneExpConfig};
pub use transform::{FixedPointConfig, FlowContext, InverseStats, Sequential, Transform};
