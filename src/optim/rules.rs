//! The update rules, one parameter tensor at a time, in place and without a graph.
//!
//! Each follows the single-tensor code path of `torch.optim` 2.13 (the order of operations
//! included), with `g` the transformed gradient, `lr` the scheduled rate times the group's
//! `lr_mult`, `wd` the group's weight decay and `t` the parameter's own step count (from 1):
//! * SGD: `d = g + wd*theta`; with momentum `mu`: `b = d` at `t = 1`, else
//!   `b = mu*b + (1 - dampening)*d`; `d = d + mu*b` (Nesterov) or `d = b`; `theta -= lr*d`.
//! * Adam (Kingma & Ba 2015, Alg. 1): `g += wd*theta`; `m = lerp(m, g, 1 - b1)`,
//!   `v = b2*v + (1 - b2)*g^2`; `theta -= lr/(1 - b1^t) * m / (sqrt(v)/sqrt(1 - b2^t) + eps)`.
//! * AdamW (Loshchilov & Hutter 2019): `theta *= 1 - lr*wd`, then Adam without the `wd` term.
//! * Adamax (Kingma & Ba 2015, Alg. 2): `g += wd*theta`; `m = lerp(m, g, 1 - b1)`,
//!   `u = max(b2*u, |g| + eps)`; `theta -= lr/(1 - b1^t) * m/u`.
//! * RMSprop: `g += wd*theta`; `s = alpha*s + (1 - alpha)*g^2`; centred: `a = lerp(a, g, 1 - alpha)`,
//!   `r = sqrt(s - a^2) + eps`, else `r = sqrt(s) + eps`; with momentum `mu`: `b = mu*b + g/r`,
//!   `theta -= lr*b`, else `theta -= lr*g/r`.

use tch::Tensor;

use super::config::{OptimConfig, OptimKind};
use crate::{Error, Result};

/// A parameter's optimiser state: its step count and its buffers, in the order of [`buffer_names`]
/// (empty until the first update, zeros then, as in PyTorch's lazy state initialisation).
#[derive(Debug, Default)]
pub(super) struct ParamState {
    pub step: u64,
    pub buffers: Vec<Tensor>,
}

/// The names of the per-parameter buffers `config` keeps (PyTorch's state-dict names).
pub fn buffer_names(config: &OptimConfig) -> Vec<&'static str> {
    match config.kind {
        OptimKind::Sgd if config.momentum != 0.0 => vec!["momentum_buffer"],
        OptimKind::Sgd => vec![],
        OptimKind::Adam | OptimKind::AdamW => vec!["exp_avg", "exp_avg_sq"],
        OptimKind::Adamax => vec!["exp_avg", "exp_inf"],
        OptimKind::RmsProp => {
            let mut names = vec!["square_avg"];
            if config.momentum > 0.0 {
                names.push("momentum_buffer");
            }
            if config.centered {
                names.push("grad_avg");
            }
            names
        }
    }
}

/// Updates `param` in place from its gradient `grad` with learning rate `lr` and weight decay `wd`.
pub(super) fn update(
    config: &OptimConfig,
    param: &mut Tensor,
    grad: &Tensor,
    state: &mut ParamState,
    lr: f64,
    wd: f64,
) -> Result<()> {
    if state.buffers.is_empty() {
        state.buffers = buffer_names(config)
            .iter()
            .map(|_| param.f_zeros_like())
            .collect::<std::result::Result<_, _>>()?;
    }
    state.step += 1;
    let decoupled = config.kind == OptimKind::AdamW;
    if decoupled && wd != 0.0 {
        let _ = param.f_mul_scalar_(1.0 - lr * wd)?;
    }
    let g = if wd != 0.0 && !decoupled {
        grad.f_add(&param.f_mul_scalar(wd)?)?
    } else {
        grad.shallow_clone()
    };
    let t = state.step;
    let delta = match (config.kind, &mut state.buffers[..]) {
        (OptimKind::Sgd, bufs) => sgd(config, g, bufs, t)?.f_mul_scalar(lr)?,
        (OptimKind::Adam | OptimKind::AdamW, [m, v]) => adam(config, &g, m, v, t, lr)?,
        (OptimKind::Adamax, [m, u]) => adamax(config, &g, m, u, t, lr)?,
        (OptimKind::RmsProp, bufs) => rmsprop(config, g, bufs)?.f_mul_scalar(lr)?,
        (kind, bufs) => {
            return Err(Error::config(format!(
                "optimiser state of kind {kind} has {} buffers; was it loaded from another kind?",
                bufs.len()
            )))
        }
    };
    let _ = param.f_sub_(&delta)?;
    Ok(())
}

/// SGD's direction `d` (before the learning rate).
fn sgd(config: &OptimConfig, g: Tensor, bufs: &mut [Tensor], t: u64) -> Result<Tensor> {
    let Some(b) = bufs.first_mut() else {
        return Ok(g);
    };
    let mu = config.momentum;
    if t == 1 {
        b.f_copy_(&g)?;
    } else {
        let _ = b.f_mul_scalar_(mu)?;
        let _ = b.f_add_(&g.f_mul_scalar(1.0 - config.dampening)?)?;
    }
    Ok(if config.nesterov {
        g.f_add(&b.f_mul_scalar(mu)?)?
    } else {
        b.shallow_clone()
    })
}

/// Adam's step `lr/(1 - b1^t) * m / (sqrt(v)/sqrt(1 - b2^t) + eps)`.
fn adam(
    config: &OptimConfig,
    g: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    t: u64,
    lr: f64,
) -> Result<Tensor> {
    let (b1, b2) = config.betas;
    let _ = m.f_lerp_(g, 1.0 - b1)?;
    let _ = v.f_mul_scalar_(b2)?;
    let _ = v.f_addcmul_(g, &g.f_mul_scalar(1.0 - b2)?)?;
    let step_size = lr / (1.0 - b1.powf(t as f64));
    let denom = v
        .f_sqrt()?
        .f_div_scalar_((1.0 - b2.powf(t as f64)).sqrt())?
        .f_add_scalar_(config.eps)?;
    Ok(m.f_div(&denom)?.f_mul_scalar_(step_size)?)
}

/// Adamax's step `lr/(1 - b1^t) * m/u`.
fn adamax(
    config: &OptimConfig,
    g: &Tensor,
    m: &mut Tensor,
    u: &mut Tensor,
    t: u64,
    lr: f64,
) -> Result<Tensor> {
    let (b1, b2) = config.betas;
    let _ = m.f_lerp_(g, 1.0 - b1)?;
    let _ = u.f_mul_scalar_(b2)?;
    let candidate = g.f_abs()?.f_add_scalar_(config.eps)?;
    let _ = u.f_maximum_out(u, &candidate)?;
    let step_size = lr / (1.0 - b1.powf(t as f64));
    Ok(m.f_div(u)?.f_mul_scalar_(step_size)?)
}

/// RMSprop's direction (before the learning rate); buffers `[s, b if momentum, a if centred]`.
fn rmsprop(config: &OptimConfig, g: Tensor, bufs: &mut [Tensor]) -> Result<Tensor> {
    let alpha = config.alpha;
    let expected = 1 + usize::from(config.momentum > 0.0) + usize::from(config.centered);
    if bufs.len() != expected {
        return Err(Error::config(format!(
            "RMSprop state has {} buffers, expected {expected}",
            bufs.len()
        )));
    }
    let _ = bufs[0].f_mul_scalar_(alpha)?;
    let _ = bufs[0].f_addcmul_(&g, &g.f_mul_scalar(1.0 - alpha)?)?;
    let mut avg = if config.centered {
        let grad_avg = &mut bufs[expected - 1];
        let _ = grad_avg.f_lerp_(&g, 1.0 - alpha)?;
        let grad_avg = &bufs[expected - 1];
        bufs[0].f_addcmul(grad_avg, &grad_avg.f_neg()?)?.f_sqrt_()?
    } else {
        bufs[0].f_sqrt()?
    };
    let _ = avg.f_add_scalar_(config.eps)?;
    if config.momentum > 0.0 {
        let b = &mut bufs[1];
        let _ = b.f_mul_scalar_(config.momentum)?;
        let _ = b.f_addcdiv_(&g, &avg)?;
        Ok(b.shallow_clone())
    } else {
        Ok(g.f_div(&avg)?)
    }
}
