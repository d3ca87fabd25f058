//! The parts of evaluation reports that several tasks share, so that the same quantity has the
//! same key in every report.

use super::lipschitz_max;
use crate::flows::InverseStats;
use crate::nn::ResidualNet;
use crate::Result;
use serde::{Deserialize, Serialize};

/// How well an invertible model inverts and how contractive its residual blocks are: every
/// invertible task's report carries these keys.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct InvertibilityReport {
    /// The largest `|f^{-1}(f(x)) - x|` over the test items inverted.
    pub inverse_max_abs_err: f64,
    /// The most fixed-point iterations any block needed.
    pub inverse_iters_max: usize,
    /// The largest final relative residual `max|x_{n+1} - x_n| / (atol + rtol |y|)` of any block
    /// (below 1: converged).
    pub inverse_residual_max: f64,
    /// The largest Lipschitz bound `prod_i |W_hat_i|_2` of any block's `g`.
    pub lipschitz_max: f64,
}

impl InvertibilityReport {
    /// The report of a round trip with error `max_abs_err` whose inversions `stats` recorded, for
    /// a model with residual nets `nets`.
    pub fn new(max_abs_err: f64, stats: &InverseStats, nets: &[&ResidualNet]) -> Result<Self> {
        Ok(InvertibilityReport {
            inverse_max_abs_err: max_abs_err,
            inverse_iters_max: stats.max_iters,
            inverse_residual_max: stats.max_residual,
            lipschitz_max: lipschitz_max(nets)?,
        })
    }
}
