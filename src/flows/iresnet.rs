//! The invertible residual block `y = x + g(x)` with `Lip(g) < 1` (Behrmann et al., ICML 2019).
//!
//! * forward: `y = x + g(x)` and an estimate of `ln det(I + J_g(x))` chosen per call through the
//!   context's [`LogDetEstimator`](crate::linalg::logdet::LogDetEstimator) (exact, truncated series,
//!   Russian roulette; tangent or VJP products);
//! * inverse: the Banach fixed-point iteration `x_0 = y`, `x_{n+1} = y - g(x_n)` (Algorithm 1),
//!   which converges since `g` is a contraction, with error `|x* - x_n| <= L^n / (1 - L) |x_1 - x_0|`.

use super::layer::{Built, LayerExample, LayerSpec};
use super::transform::{FlowContext, ItemStats, Transform};
use super::LayerConfig;
use crate::linalg::logdet::{self, Backend};
use crate::nn::residual_net::ResidualNet;
use crate::nn::{ActivationKind, SpectralConfig};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn::Path;
use tch::{Kind, Tensor};

/// The configuration of an [`IResBlock`] (`{ layer = "iresblock", hidden = [...] }`): `g` is an
/// MLP `D - hidden... - D` on vector inputs `[D]`, and a conv net `C - hidden... - C` with the
/// given odd `kernels` on image inputs `[C, H, W]`, every linear map spectrally normalised
/// (SPEC section 1). Parameters: `g.<k>.{weight,bias,u,v,sigma}` for the linear maps and
/// `g.<k>.beta` for LipSwish, `k` counting layers with activations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IResBlockConfig {
    /// Widths of the hidden layers of `g` (hidden channels on images), e.g. `[128, 128, 128]`.
    pub hidden: Vec<i64>,
    /// Odd kernel sizes of the convs of `g` on images, one more than `hidden` (default 3 for
    /// the first and last conv, 1 between: 3-1-3 for two hidden layers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernels: Option<Vec<i64>>,
    /// The 1-Lipschitz activation of `g`.
    #[serde(default)]
    pub activation: ActivationKind,
    /// Spectral normalisation (`c`, power iterations).
    #[serde(default)]
    pub spectral: SpectralConfig,
    /// The activation also comes first, before the first linear map (Residual Flows' image
    /// blocks; the i-ResNet classifier's blocks after the first).
    #[serde(default)]
    pub preactivation: bool,
}

impl IResBlockConfig {
    /// The kernel sizes on images: the configured ones, or 3-1-...-1-3.
    fn kernel_sizes(&self) -> Vec<i64> {
        self.kernels.clone().unwrap_or_else(|| {
            let n = self.hidden.len() + 1;
            (0..n).map(|i| if i == 0 || i + 1 == n { 3 } else { 1 }).collect()
        })
    }
}

impl LayerSpec for IResBlockConfig {
    fn collection(&self) -> Option<&'static str> {
        Some("blocks")
    }

    fn build(&self, p: &Path, input: &[i64]) -> Result<Built> {
        for &w in &self.hidden {
            crate::limits::check("hidden widths", w, crate::limits::MAX_WIDTH)?;
        }
        self.spectral.validate()?;
        let g = match *input {
            [d] => {
                if self.kernels.is_some() {
                    return Err(Error::config(
                        "kernels apply to image inputs only; remove them for vector data",
                    ));
                }
                let dims: Vec<i64> = std::iter::once(d)
                    .chain(self.hidden.iter().copied())
                    .chain(std::iter::once(d))
                    .collect();
                ResidualNet::mlp(&(p / "g"), &dims, self.activation, self.spectral, self.preactivation)?
            }
            [c, h, w] => {
                let kernels = self.kernel_sizes();
                if kernels.len() != self.hidden.len() + 1 {
                    return Err(Error::config(format!(
                        "{} hidden widths need {} kernel sizes, got {kernels:?}",
                        self.hidden.len(),
                        self.hidden.len() + 1
                    )));
                }
                ResidualNet::conv_widths(
                    &(p / "g"),
                    c,
                    &self.hidden,
                    &kernels,
                    (h, w),
                    self.activation,
                    self.spectral,
                    self.preactivation,
                )?
            }
            _ => {
                return Err(Error::config(format!(
                    "an i-ResNet block needs inputs [D] or [C, H, W], got {input:?}"
                )))
            }
        };
        Ok((Box::new(IResBlock::new(g)), input.to_vec()))
    }

    fn examples() -> Vec<LayerExample> {
        let spectral = SpectralConfig {
            coeff: 0.9,
            n_power_iter: 5,
        };
        let dense = IResBlockConfig {
            hidden: vec![16, 16],
            kernels: None,
            activation: ActivationKind::Lipswish,
            spectral,
            preactivation: false,
        };
        let conv = IResBlockConfig {
            hidden: vec![4, 4],
            activation: ActivationKind::Elu,
            preactivation: true,
            ..dense.clone()
        };
        vec![
            LayerExample::new("iresblock_dense", LayerConfig::IResBlock(dense), &[4]),
            LayerExample::new("iresblock_conv", LayerConfig::IResBlock(conv), &[2, 4, 4]),
        ]
    }
}

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
        if !ctx.compute_logdet {
            let logdet = Tensor::zeros([x.size()[0]], (x.kind(), x.device()));
            return Ok((x + self.g.forward(x, ctx.train)?, logdet));
        }
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

    /// The Banach iteration until every item's relative residual
    /// `max|x_{n+1} - x_n| / (atol + rtol |y|)` is below 1 or `max_iter`; records the iterations
    /// and residuals overall and per item (an item's iterations are those it needed itself).
    fn inverse(&self, y: &Tensor, ctx: &mut FlowContext) -> Result<Tensor> {
        let cfg = ctx.inverse;
        let (x, iters, residual, items) = tch::no_grad(|| -> Result<_> {
            let y = self.g.preferred_layout(&y.detach());
            let weights = self.g.normalized_weights(false);
            let scale = y.abs() * cfg.rtol + cfg.atol;
            let batch = y.size().first().copied().unwrap_or(1);
            let mut item_iters = Tensor::zeros([batch], (Kind::Int64, y.device()));
            let mut item_residual = Tensor::full([batch], f64::INFINITY, (Kind::Double, y.device()));
            let mut x = y.shallow_clone();
            let mut residual = f64::INFINITY;
            let mut iters = cfg.max_iter;
            for iter in 1..=cfg.max_iter {
                let next = &y - self.g.forward_with(&x, &weights)?;
                let ratio = (&next - &x).abs_().g_div_(&scale);
                item_residual = ratio.reshape([batch, -1]).amax([1].as_slice(), false).to_kind(Kind::Double);
                let newly = item_residual.lt(1.0).logical_and(&item_iters.eq(0));
                item_iters = item_iters.where_self(&newly.logical_not(), &item_iters.full_like(iter as i64));
                residual = item_residual.max().double_value(&[]);
                x = next;
                if residual < 1.0 {
                    iters = iter;
                    break;
                }
            }
            // items that never converged used every iteration
            let unconverged = item_iters.eq(0);
            let item_iters = item_iters.where_self(&unconverged.logical_not(), &item_iters.full_like(cfg.max_iter as i64));
            Ok((x, iters, residual, (item_iters, item_residual)))
        })?;
        ctx.inverse_stats.record(iters, residual);
        ItemStats::record(&mut ctx.item_stats, items.0, items.1);
        Ok(x)
    }
}
