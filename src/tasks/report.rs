//! The parts of evaluation reports that several tasks share, so that the same quantity has the
//! same key in every report.

use super::lipschitz_max;
use crate::flows::FlowContext;
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
    /// Whether every inversion converged (every relative residual below 1).
    pub inverse_converged: bool,
    /// Test items inverted, and those whose inversion did not converge.
    pub inverse_points: usize,
    pub inverse_unconverged_points: usize,
    /// The largest Lipschitz bound `prod_i |W_hat_i|_2` of any block's `g` (below 1 for the
    /// blocks to be invertible).
    pub lipschitz_max: f64,
}

impl InvertibilityReport {
    /// The report of a round trip of `points` items with error `max_abs_err` whose inversions
    /// `ctx` recorded, for a model with residual nets `nets`.
    pub fn new(
        max_abs_err: f64,
        points: i64,
        ctx: &FlowContext,
        nets: &[&ResidualNet],
    ) -> Result<Self> {
        let stats = &ctx.inverse_stats;
        let unconverged = match &ctx.item_stats {
            Some(items) => items.unconverged()?,
            None => 0,
        };
        Ok(InvertibilityReport {
            inverse_max_abs_err: max_abs_err,
            inverse_iters_max: stats.max_iters,
            inverse_residual_max: stats.max_residual,
            inverse_converged: stats.converged(),
            inverse_points: points as usize,
            inverse_unconverged_points: unconverged,
            lipschitz_max: lipschitz_max(nets)?,
        })
    }

    /// A one-line warning when the report shows an inverse that did not converge or a block that
    /// is not contractive.
    pub fn warning(&self) -> Option<String> {
        let mut problems = Vec::new();
        if !self.inverse_converged {
            problems.push(format!(
                "the fixed-point inverse did not converge for {} of {} test points (largest \
                 relative residual {:.3}, {} iterations); raise eval.inverse.max_iter or loosen \
                 eval.inverse.atol/rtol (f32 reaches about 1e-5)",
                self.inverse_unconverged_points,
                self.inverse_points,
                self.inverse_residual_max,
                self.inverse_iters_max
            ));
        }
        if self.lipschitz_max.is_nan() || self.lipschitz_max >= 1.0 {
            problems.push(format!(
                "a residual block has Lip(g) = {:.6} >= 1, so the model is not guaranteed to be \
                 invertible",
                self.lipschitz_max
            ));
        }
        (!problems.is_empty()).then(|| problems.join("; "))
    }
}
