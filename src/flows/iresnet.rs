//! The invertible residual block `y = x + g(x)` with `Lip(g) < 1` (Behrmann et al., ICML 2019).
//!
//! * forward: `y = x + g(x)` and an estimate of `ln det(I + J_g(x))` chosen per call through the
//!   context's [`LogDetEstimator`](crate::linalg::logdet::LogDetEstimator) (exact, truncated series,
//!   Russian roulette; tangent or VJP products);
//! * inverse: the Banach fixed-point iteration `x_0 = y`, `x_{n+1} = y - g(x_n)` (Algorithm 1),
//!   which converges since `g` is a contraction, with error `|x* - x_n| <= L^n / (1 - L) |x_1 - x_0|`.

use super::transform::{FlowContext, Transform};
use crate::linalg::logdet::{self, Backend};
use crate::nn::residual_net::ResidualNet;
use crate::{Error, Result};
use tch::Tensor;

/// An invertible residual block around a Lipschitz-constrained `g`.
#[derive(Debug)]
pub struct IResBlock {
    pub g: ResidualNet,
}

impl IResBlock {
    /// A block around `g`.
    pub fn new(g: ResidualNet) -> Self {
        IResBlock { g }
    }

    /// Forward pass and log-det through vector-Jacobian products with a graph (second order).
    ///
    /// libtorch's C API seeds backward passes with ones only, so `w^T J_g` is taken as the gradient
    /// of `<g(x'), w>` at a fresh alias `x' = x * 1` per product: the alias keeps the graph back to
    /// `x` (parameters of earlier layers get their gradients) while `w`, which depends on earlier
    /// aliases, is not differentiated through.
    fn forward_vjp(&self, x: &Tensor, ctx: &mut FlowContext) -> Result<(Tensor, Tensor)> {
        tch::with_grad(|| {
            let xg = if x.requires_grad() {
                x.shallow_clone()
            } else {
                x.detach().set_requires_grad(true)
            };
            let gx = self.g.forward(&xg, ctx.train)?;
            let mut vjp = |w: &Tensor| -> Result<Tensor> {
                let alias = &xg * 1.0;
                let g_alias = self.g.forward(&alias, false)?;
                let root = (&g_alias * w).sum(g_alias.kind());
                let mut grads = Tensor::f_run_backward(&[root], &[&alias], true, true)?;
                grads.pop().ok_or_else(|| {
                    Error::shape("autograd returned no gradient for the block input")
                })
            };
            let mut no_jvp = |_: &Tensor| -> Result<Tensor> {
                Err(Error::config(
                    "the VJP backend does not compute tangent products",
                ))
            };
            let ld = logdet::estimate(&ctx.logdet, &mut no_jvp, &mut vjp, &xg, &mut ctx.rng)?;
            Ok((&xg + &gx, ld))
        })
    }
}

impl Transform for IResBlock {
    fn residual_nets(&self) -> Vec<&ResidualNet> {
        vec![&self.g]
    }

    fn forward(&self, x: &Tensor, ctx: &mut FlowContext) -> Result<(Tensor, Tensor)> {
        let x = &self.g.preferred_layout(x);
        if ctx.logdet.backend() == Backend::Vjp
            && !matches!(ctx.logdet, logdet::LogDetEstimator::Exact)
        {
            return self.forward_vjp(x, ctx);
        }
        let lin = self.g.linearize(x, ctx.train)?;
        let mut jvp = |t: &Tensor| -> Result<Tensor> { Ok(lin.jvp(t)) };
        let mut no_vjp = |_: &Tensor| -> Result<Tensor> {
            Err(Error::config(
                "the tangent backend does not compute vector-Jacobian products",
            ))
        };
        let ld = logdet::estimate(&ctx.logdet, &mut jvp, &mut no_vjp, x, &mut ctx.rng)?;
        Ok((x + &lin.output, ld))
    }

    fn inverse(&self, y: &Tensor, ctx: &mut FlowContext) -> Result<Tensor> {
        let cfg = ctx.inverse;
        let (x, iters, residual) = tch::no_grad(|| -> Result<(Tensor, usize, f64)> {
            let y = self.g.preferred_layout(&y.detach());
            let weights = self.g.normalized_weights(false);
            let scale = y.abs() * cfg.rtol + cfg.atol;
            let mut x = y.shallow_clone();
            let mut residual = f64::INFINITY;
            for iter in 1..=cfg.max_iter {
                let next = &y - self.g.forward_with(&x, &weights)?;
                residual = (&next - &x).abs_().g_div_(&scale).max().double_value(&[]);
                x = next;
                if residual < 1.0 {
                    return Ok((x, iter, residual));
                }
            }
            Ok((x, cfg.max_iter, residual))
        })?;
        ctx.inverse_stats.record(iters, residual);
        Ok(x)
    }
}
