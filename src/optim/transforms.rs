//! Gradient transforms: a group's ordered chain, applied to its gradients before the update.
//!
//! With `g` a parameter's gradient and `G` the gradients of the whole group:
//! * `clip_value = c`: `g <- clamp(g, -c, c)` (`torch.nn.utils.clip_grad_value_`);
//! * `clip_norm = c`: `g <- g * min(1, c / (|g|_2 + 1e-6))` for each tensor on its own;
//! * `clip_group_norm = c`: `g <- g * min(1, c / (|G|_2 + 1e-6))` with `|G|_2` the norm of the
//!   group's gradients stacked into one vector (`torch.nn.utils.clip_grad_norm_`, same `1e-6`);
//! * `scale = s`: `g <- s * g`;
//! * `noise = { std, decay, seed }`: `g <- g + sigma_t * N(0, I)` with
//!   `sigma_t = std / (1 + t)^(decay / 2)`, `t` the optimiser's completed steps
//!   (Neelakantan et al. 2015, "Adding gradient noise improves learning for very deep networks",
//!   variance `eta / (1 + t)^gamma`, gamma = 0.55);
//! * `closure`: a Rust closure `f(path, g) -> g'` set with
//!   [`Optimizer::set_closure`](super::Optimizer::set_closure).
//!
//! The noise is drawn from a ChaCha generator seeded by `(seed, t, parameter index, position in
//! the chain)`, so a run is reproducible and resumes exactly without storing generator state.
//! tch exposes no `torch.Generator`, so this is the one transform that fills its values on the host
//! (a per-element loop) rather than with tensor ops; it leaves libtorch's global RNG untouched.

use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::{Error, Result};

/// One gradient transform. TOML: an inline table with one key (`{ clip_norm = 1.0 }`,
/// `{ noise = { std = 0.01, seed = 7 } }`) or the string `"closure"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TransformConfig {
    /// Clamp every gradient entry to `[-c, c]`.
    ClipValue(f64),
    /// Rescale each gradient tensor to L2 norm at most `c`.
    ClipNorm(f64),
    /// Rescale the group's gradients together to L2 norm at most `c`.
    ClipGroupNorm(f64),
    /// Multiply the gradients by `s`.
    Scale(f64),
    /// Add seeded Gaussian noise.
    Noise(NoiseConfig),
    /// The closure set for this group with `Optimizer::set_closure` (at this place in the chain).
    Closure,
}

/// Parameters of the Gaussian gradient-noise transform.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseConfig {
    /// Standard deviation at step 0 (>= 0).
    pub std: f64,
    /// Annealing exponent gamma of the variance; 0 keeps `std` constant. Default 0.55 (the paper's).
    #[serde(default = "default_decay")]
    pub decay: f64,
    /// Seed of the noise. Default 0.
    #[serde(default)]
    pub seed: u64,
}

fn default_decay() -> f64 {
    0.55
}

/// A user gradient transform: gets the parameter's VarStore name and its gradient, returns the new
/// gradient (same shape). Runs without a graph (inside `tch::no_grad`).
pub type GradClosure = Box<dyn FnMut(&str, &Tensor) -> Tensor>;

impl TransformConfig {
    /// Checks the transform's parameters; the message says which value is wrong.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = |name: &str, c: f64| {
            if c > 0.0 && c.is_finite() {
                Ok(())
            } else {
                Err(format!("{name} = {c} must be a finite number > 0"))
            }
        };
        match self {
            TransformConfig::ClipValue(c) => positive("clip_value", *c),
            TransformConfig::ClipNorm(c) => positive("clip_norm", *c),
            TransformConfig::ClipGroupNorm(c) => positive("clip_group_norm", *c),
            TransformConfig::Scale(s) if !s.is_finite() => {
                Err(format!("scale = {s} must be finite"))
            }
            TransformConfig::Noise(n) if !(n.std >= 0.0 && n.std.is_finite()) => Err(format!(
                "noise std = {} must be a finite number >= 0",
                n.std
            )),
            TransformConfig::Noise(n) if !(n.decay >= 0.0 && n.decay.is_finite()) => Err(format!(
                "noise decay = {} must be a finite number >= 0",
                n.decay
            )),
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for TransformConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransformConfig::ClipValue(c) => write!(f, "clip_value({c})"),
            TransformConfig::ClipNorm(c) => write!(f, "clip_norm({c})"),
            TransformConfig::ClipGroupNorm(c) => write!(f, "clip_group_norm({c})"),
            TransformConfig::Scale(s) => write!(f, "scale({s})"),
            TransformConfig::Noise(n) => {
                write!(
                    f,
                    "noise(std={}, decay={}, seed={})",
                    n.std, n.decay, n.seed
                )
            }
            TransformConfig::Closure => write!(f, "closure"),
        }
    }
}

/// A parameter's gradient as a transform sees it.
pub(super) struct GradSlot<'a> {
    /// The parameter's VarStore name.
    pub name: &'a str,
    /// The parameter's index in the optimiser (sorted by name); part of the noise seed.
    pub index: usize,
    /// The gradient, modified in place.
    pub grad: Tensor,
}

/// Applies `chain` in order to the gradients of one group. `step` is the number of completed steps.
pub(super) fn apply_chain(
    chain: &[TransformConfig],
    closure: &mut Option<GradClosure>,
    grads: &mut [GradSlot<'_>],
    step: u64,
    group: &str,
) -> Result<()> {
    for (position, transform) in chain.iter().enumerate() {
        match transform {
            TransformConfig::ClipGroupNorm(max) => {
                let norms = grads
                    .iter()
                    .map(|s| norm(&s.grad))
                    .collect::<Result<Vec<_>>>()?;
                let coef = clip_coef(&combined_norm(&norms)?, *max)?;
                for slot in grads.iter_mut() {
                    let _ = slot.grad.f_mul_(&coef)?;
                }
            }
            TransformConfig::Closure => {
                let f = closure.as_mut().ok_or_else(|| {
                    Error::config(format!(
                        "group \"{group}\" lists the transform \"closure\" but no closure was set; \
                         call Optimizer::set_closure(\"{group}\", f) before step()"
                    ))
                })?;
                for slot in grads.iter_mut() {
                    apply_closure(f, slot, group)?;
                }
            }
            _ => {
                for slot in grads.iter_mut() {
                    apply_to_tensor(transform, slot, step, position)?;
                }
            }
        }
    }
    Ok(())
}

/// `min(1, max / (norm + 1e-6))` as a 0-d tensor (no host synchronisation).
pub(super) fn clip_coef(norm: &Tensor, max: f64) -> Result<Tensor> {
    Ok(norm
        .f_add_scalar(1e-6)?
        .f_reciprocal()?
        .f_mul_scalar(max)?
        .f_clamp_max(1.0)?)
}

/// `|t|_2` as a 0-d f64 tensor.
pub(super) fn norm(t: &Tensor) -> Result<Tensor> {
    Ok(t.f_norm()?.f_to_kind(Kind::Double)?)
}

/// The L2 norm of several tensors taken together from their norms: `sqrt(sum_i n_i^2)` (0 for none).
pub(super) fn combined_norm(norms: &[Tensor]) -> Result<Tensor> {
    if norms.is_empty() {
        return Ok(Tensor::f_zeros([], (Kind::Double, tch::Device::Cpu))?);
    }
    Ok(Tensor::f_stack(norms, 0)?.f_norm()?)
}

fn apply_to_tensor(
    transform: &TransformConfig,
    slot: &mut GradSlot<'_>,
    step: u64,
    position: usize,
) -> Result<()> {
    let grad = &mut slot.grad;
    match transform {
        TransformConfig::ClipValue(c) => {
            let _ = grad.f_clamp_(-c, *c)?;
        }
        TransformConfig::ClipNorm(max) => {
            let coef = clip_coef(&norm(grad)?, *max)?;
            let _ = grad.f_mul_(&coef)?;
        }
        TransformConfig::Scale(s) => {
            let _ = grad.f_mul_scalar_(*s)?;
        }
        TransformConfig::Noise(noise) => {
            let sigma = noise.std / (1.0 + step as f64).powf(noise.decay / 2.0);
            if sigma > 0.0 {
                let seed = mix(&[noise.seed, step, slot.index as u64, position as u64]);
                let _ = grad.f_add_(&gaussian_like(grad, seed)?.f_mul_scalar(sigma)?)?;
            }
        }
        TransformConfig::ClipGroupNorm(_) | TransformConfig::Closure => {}
    }
    Ok(())
}

fn apply_closure(f: &mut GradClosure, slot: &mut GradSlot<'_>, group: &str) -> Result<()> {
    let new = f(slot.name, &slot.grad);
    if new.size() != slot.grad.size() {
        return Err(Error::shape(format!(
            "the closure of group \"{group}\" returned shape {:?} for parameter {} whose gradient has shape {:?}",
            new.size(),
            slot.name,
            slot.grad.size()
        )));
    }
    slot.grad.f_copy_(&new)?;
    Ok(())
}

/// Standard normal values with `like`'s shape, kind and device, from a generator seeded by `seed`.
fn gaussian_like(like: &Tensor, seed: u64) -> Result<Tensor> {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = like.numel();
    let values: Vec<f64> = (0..n).map(|_| rng.sample(StandardNormal)).collect();
    Ok(Tensor::f_from_slice(&values)?
        .f_reshape(like.size())?
        .f_to_kind(like.kind())?
        .f_to_device(like.device())?)
}

/// Combines several numbers into one seed with the SplitMix64 finaliser (Steele et al. 2014).
fn mix(parts: &[u64]) -> u64 {
    parts.iter().fold(0x9E37_79B9_7F4A_7C15, |acc, &x| {
        let mut z = (acc ^ x).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}
