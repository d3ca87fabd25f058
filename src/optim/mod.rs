//! Optimisers with parameter groups: per-layer learning rates and free gradient transforms
//! (SPEC section 5; Su Jianlin, "让Keras更酷一些!: 分层的学习率和自由的梯度", 2019-03-10).
//!
//! The post obtains a per-layer learning rate by reparameterising a weight `theta = lambda * phi`:
//! under SGD that scales the layer's learning rate by `lambda^2`, under Adam-like optimisers by
//! `lambda` (up to `eps`). Here the multiplier is explicit: parameters are split into groups by
//! glob patterns over their VarStore names (first match wins; the rest form the group
//! `"default"`), and each group has a learning-rate multiplier, a weight decay, a `frozen` flag and
//! an ordered chain of gradient transforms ([`transforms`]). One [`Optimizer::step`]:
//! 1. takes the gradient of every non-frozen parameter that has one, records its L2 norm;
//! 2. applies each group's transform chain, in the order given;
//! 3. clips all gradients together to `global_clip_norm` (if set);
//! 4. fails with [`Error::NonFinite`] before touching any parameter if a
//!    gradient was NaN or infinite (before or after the transforms);
//! 5. updates each parameter in place without a graph, with learning rate
//!    `lr * schedule(t) * lr_mult` ([`rules`] has the update rules, [`schedule`] the schedules).
//!
//! Step 4 reads the norms back from the device once per step; that is the only synchronisation.
//! Gradients are zeroed, not freed, by [`Optimizer::zero_grad`] (PyTorch's
//! `zero_grad(set_to_none=False)`): a parameter that has never received a gradient is skipped, as
//! PyTorch skips `grad = None`.
//!
//! # TOML
//!
//! ```toml
//! [optim]
//! kind = "adam"            # sgd | adam | adamw | adamax | rmsprop
//! lr = 1e-3
//! betas = [0.9, 0.999]     # adam, adamw, adamax (PyTorch defaults when left out)
//! eps = 1e-8               # adam, adamw, adamax, rmsprop
//! # momentum = 0.9, dampening = 0, nesterov = true   (sgd; momentum also rmsprop)
//! # alpha = 0.99, centered = false                   (rmsprop)
//! weight_decay = 0.0       # default: 0, or 1e-2 for adamw
//! global_clip_norm = 5.0   # clip all gradients together, after the groups' transforms
//! log_grad_stats = true    # the trainer logs the per-group gradient norms
//! schedule = { kind = "cosine", warmup_steps = 100, total_steps = 10000 }
//! # or { kind = "constant" } | { kind = "warmup", warmup_steps = 500 }
//! #  | { kind = "step", step_size = 1000, gamma = 0.5 }   (cosine: final_mult = 0.0)
//!
//! [[optim.groups]]
//! pattern = "blocks.0.*"   # glob over the dot-separated name; '*' crosses dots
//! lr_mult = 0.1
//! transforms = [{ clip_norm = 1.0 }]
//!
//! [[optim.groups]]
//! pattern = "*.bias"
//! weight_decay = 0.0
//! transforms = [{ clip_value = 0.5 }, { scale = 2.0 }, { noise = { std = 1e-3, decay = 0.55, seed = 7 } },
//!               { clip_group_norm = 10.0 }, "closure"]
//!
//! [[optim.groups]]
//! pattern = "embed.*"
//! frozen = true
//! ```
//!
//! Unknown keys and transforms are errors, and so is a group that receives no parameter (the
//! message names the pattern and lists parameter names).
//!
//! # Example
//!
//! ```
//! use genflow::optim::{OptimConfig, Optimizer};
//! use genflow::tch::{nn, nn::Module, Device, Kind, Tensor};
//!
//! #[derive(serde::Deserialize)]
//! struct File {
//!     optim: OptimConfig,
//! }
//! let file: File = toml::from_str(
//!     r#"
//!     [optim]
//!     kind = "adam"
//!     lr = 1e-2
//!     [[optim.groups]]
//!     pattern = "layer0.*"
//!     lr_mult = 0.1
//!     transforms = [{ clip_norm = 1.0 }, "closure"]
//!     "#,
//! )?;
//! let vs = nn::VarStore::new(Device::Cpu);
//! let net = nn::seq()
//!     .add(nn::linear(vs.root() / "layer0", 2, 8, Default::default()))
//!     .add_fn(|x| x.tanh())
//!     .add(nn::linear(vs.root() / "layer1", 8, 1, Default::default()));
//! let mut opt = Optimizer::new(&vs, &file.optim)?;
//! opt.set_closure("layer0.*", |path, grad| {
//!     assert!(path.starts_with("layer0."));
//!     grad * 0.5
//! })?;
//! for a in opt.assignments() {
//!     println!("{:<16} group {:<10} lr x{}", a.name, a.group, a.lr_mult);
//! }
//! let x = Tensor::randn([16, 2], (Kind::Float, Device::Cpu));
//! for _ in 0..3 {
//!     opt.zero_grad();
//!     net.forward(&x).square().mean(Kind::Float).backward();
//!     let report = opt.step()?;
//!     println!("lr {} |g| {} per group {:?}", report.lr, report.global_grad_norm, report.group_grad_norms);
//! }
//! assert_eq!(opt.step_count(), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod groups;
pub mod rules;
pub mod schedule;
mod state;
pub mod transforms;

use tch::Tensor;

pub use config::{GroupConfig, OptimConfig, OptimKind};
pub use schedule::ScheduleConfig;
pub use transforms::{GradClosure, NoiseConfig, TransformConfig};

use crate::{Error, Result};
use rules::ParamState;
use transforms::{apply_chain, clip_coef, combined_norm, norm, GradSlot};

/// The name of the group of parameters that no pattern matches.
pub const DEFAULT_GROUP: &str = "default";

/// An optimiser over the trainable variables of a `VarStore`, with parameter groups.
pub struct Optimizer {
    config: OptimConfig,
    /// Trainable variables sorted by name (shallow clones sharing storage with the VarStore).
    params: Vec<Param>,
    /// The configured groups in order, then the default group.
    groups: Vec<Group>,
    step_count: u64,
    /// A factor on the learning rate, 1 unless training rolled back after a non-finite step
    /// ([`Optimizer::scale_lr`]); kept in checkpoints as `optim.lr_scale` when not 1.
    lr_scale: f64,
}

struct Param {
    name: String,
    tensor: Tensor,
    group: usize,
    state: ParamState,
    /// Frozen at run time ([`Optimizer::set_frozen`]), on top of its group's setting.
    frozen: bool,
}

struct Group {
    name: String,
    lr_mult: f64,
    weight_decay: f64,
    frozen: bool,
    transforms: Vec<TransformConfig>,
    closure: Option<GradClosure>,
    /// Number of parameters in the group.
    size: usize,
}

/// What one step did: the learning rate it used and gradient statistics for logging.
#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    /// Base learning rate of this step (after the schedule, before the groups' `lr_mult`).
    pub lr: f64,
    /// L2 norm of all non-frozen gradients together, as backward produced them (before transforms).
    pub global_grad_norm: f64,
    /// Per non-frozen group (configured order, then `"default"` if it has parameters): the L2 norm
    /// of its gradients before transforms (0 when none of its parameters has a gradient yet).
    pub group_grad_norms: Vec<(String, f64)>,
    /// L2 norm of all gradients after the transforms and the global clip: what the update used.
    pub update_grad_norm: f64,
}

impl StepReport {
    /// The report of one training step taken in two parts ([`Optimizer::step_part`]): norms
    /// combine in quadrature (per group by name), the learning rate is the first part's.
    pub fn combine(mut self, other: StepReport) -> StepReport {
        let quadrature = |a: f64, b: f64| (a * a + b * b).sqrt();
        for (name, norm) in other.group_grad_norms {
            match self.group_grad_norms.iter_mut().find(|(n, _)| *n == name) {
                Some((_, mine)) => *mine = quadrature(*mine, norm),
                None => self.group_grad_norms.push((name, norm)),
            }
        }
        self.global_grad_norm = quadrature(self.global_grad_norm, other.global_grad_norm);
        self.update_grad_norm = quadrature(self.update_grad_norm, other.update_grad_norm);
        self
    }
}

/// A parameter's group, for printing (`--print-groups`).
#[derive(Clone, Debug, PartialEq)]
pub struct ParamAssignment {
    /// The VarStore name.
    pub name: String,
    /// Shape of the parameter.
    pub shape: Vec<i64>,
    /// The group's pattern, or [`DEFAULT_GROUP`].
    pub group: String,
    /// The group's learning-rate multiplier.
    pub lr_mult: f64,
    /// The group's weight decay.
    pub weight_decay: f64,
    /// Whether the group is frozen.
    pub frozen: bool,
    /// The group's transform chain, e.g. `["clip_norm(1)", "closure"]`.
    pub transforms: Vec<String>,
}

impl Optimizer {
    /// An optimiser over the variables of `vs` that require gradients (buffers are left alone),
    /// grouped by `config.groups`. Validates `config`; errors name the offending key or pattern.
    pub fn new(vs: &tch::nn::VarStore, config: &OptimConfig) -> Result<Self> {
        config.validate()?;
        let mut named: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let names: Vec<String> = named.iter().map(|(n, _)| n.clone()).collect();
        let owners = groups::assign(&names, &config.groups)?;
        let default_group = config.groups.len();
        let params: Vec<Param> = named
            .into_iter()
            .zip(owners)
            .map(|((name, tensor), owner)| Param {
                name,
                tensor,
                group: owner.unwrap_or(default_group),
                state: ParamState::default(),
                frozen: false,
            })
            .collect();
        let size = |i: usize| params.iter().filter(|p| p.group == i).count();
        let default_wd = config.effective_weight_decay();
        let groups = config
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| Group {
                name: g.pattern.clone(),
                lr_mult: g.lr_mult,
                weight_decay: g.weight_decay.unwrap_or(default_wd),
                frozen: g.frozen,
                transforms: g.transforms.clone(),
                closure: None,
                size: size(i),
            })
            .chain(std::iter::once(Group {
                name: DEFAULT_GROUP.to_string(),
                lr_mult: 1.0,
                weight_decay: default_wd,
                frozen: false,
                transforms: Vec::new(),
                closure: None,
                size: size(default_group),
            }))
            .collect();
        Ok(Optimizer {
            config: config.clone(),
            params,
            groups,
            step_count: 0,
            lr_scale: 1.0,
        })
    }

    /// Sets the user transform of the group whose pattern is `group_pattern` (or
    /// [`DEFAULT_GROUP`]): `f(path, grad)` returns the new gradient of the parameter named `path`.
    /// It runs where the group's chain lists `"closure"`, or last if the chain does not list it.
    /// Setting it again replaces the previous closure.
    pub fn set_closure(
        &mut self,
        group_pattern: &str,
        f: impl FnMut(&str, &Tensor) -> Tensor + 'static,
    ) -> Result<()> {
        let Some(index) = self.groups.iter().position(|g| g.name == group_pattern) else {
            let known: Vec<&str> = self.groups.iter().map(|g| g.name.as_str()).collect();
            return Err(Error::config(format!(
                "set_closure: no group has the pattern \"{group_pattern}\"; the groups are \"{}\"",
                known.join("\", \"")
            )));
        };
        let group = &mut self.groups[index];
        if !group.transforms.contains(&TransformConfig::Closure) {
            group.transforms.push(TransformConfig::Closure);
        }
        group.closure = Some(Box::new(f));
        Ok(())
    }

    /// Freezes (`true`) or thaws (`false`) every parameter whose name matches the glob `pattern`
    /// (as in the groups), on top of the configured frozen groups: [`Optimizer::step`] neither
    /// reads nor updates a frozen parameter, and its state stays as it was. For objectives that
    /// train parts of a model in turns (the GLO and IMLE phases of GLANN, say); the setting is not
    /// part of the optimiser's state, so such objectives set it again on resume. Returns how many
    /// parameters matched; a pattern that matches none is an error listing some names.
    pub fn set_frozen(&mut self, pattern: &str, frozen: bool) -> Result<usize> {
        let names: Vec<String> = self.params.iter().map(|p| p.name.clone()).collect();
        let matched = groups::matching(&names, pattern)?;
        for (p, hit) in self.params.iter_mut().zip(&matched) {
            if *hit {
                p.frozen = frozen;
            }
        }
        Ok(matched.iter().filter(|&&hit| hit).count())
    }

    /// Zeroes the gradient of every parameter that has one.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.tensor.zero_grad();
        }
    }

    /// Transforms the gradients, clips them globally and updates the parameters (see the module
    /// docs for the order). On error no parameter has changed (the gradients may have).
    pub fn step(&mut self) -> Result<StepReport> {
        let report = self.step_part(&|_| true)?;
        self.finish_step();
        Ok(report)
    }

    /// One step of only the parameters whose name `select` accepts (the others, their gradients
    /// and their state are left alone), without advancing the step count that the schedule and
    /// the noise transform read: call [`Optimizer::finish_step`] once after the parts of one
    /// training step. The global clip and the report cover the selected parameters only.
    ///
    /// An alternating GAN update steps the discriminator's parameters, then, after another
    /// backward pass, the generator's: because every parameter keeps its own step count (Adam's
    /// bias correction) and the schedule advances once per training step, this is exactly
    /// PyTorch's two optimisers (`opt_d.step()`, `opt_g.step()`, each scheduler stepped once per
    /// iteration) with one optimiser and its parameter groups.
    pub fn step_part(&mut self, select: &dyn Fn(&str) -> bool) -> Result<StepReport> {
        let lr = self.lr();
        tch::no_grad(|| self.step_with(lr, select))
    }

    /// Ends a training step taken in parts ([`Optimizer::step_part`]): the schedule moves on.
    pub fn finish_step(&mut self) {
        self.step_count += 1;
    }

    /// The base learning rate the next step will use: `lr * schedule(step_count)` (times the
    /// factor of [`Optimizer::scale_lr`], 1 unless training rolled back).
    pub fn lr(&self) -> f64 {
        self.config.lr * self.config.schedule.multiplier(self.step_count) * self.lr_scale
    }

    /// Multiplies every later learning rate by `factor` (training halves it after rolling back a
    /// non-finite step); the factor is part of the optimiser's state.
    pub fn scale_lr(&mut self, factor: f64) {
        self.lr_scale *= factor;
    }

    /// The factor of [`Optimizer::scale_lr`] so far.
    pub fn lr_scale(&self) -> f64 {
        self.lr_scale
    }

    /// The number of steps taken (restored by [`Optimizer::load_state_tensors`]).
    pub fn step_count(&self) -> u64 {
        self.step_count
    }

    /// The configuration the optimiser was built from.
    pub fn config(&self) -> &OptimConfig {
        &self.config
    }

    /// Every trainable parameter, sorted by name, with its group's settings.
    pub fn assignments(&self) -> Vec<ParamAssignment> {
        self.params
            .iter()
            .map(|p| {
                let g = &self.groups[p.group];
                ParamAssignment {
                    name: p.name.clone(),
                    shape: p.tensor.size(),
                    group: g.name.clone(),
                    lr_mult: g.lr_mult,
                    weight_decay: g.weight_decay,
                    frozen: g.frozen || p.frozen,
                    transforms: g.transforms.iter().map(|t| t.to_string()).collect(),
                }
            })
            .collect()
    }

    fn step_with(&mut self, lr: f64, select: &dyn Fn(&str) -> bool) -> Result<StepReport> {
        let Optimizer {
            config,
            params,
            groups,
            step_count,
            ..
        } = self;
        let mut slots = collect_grads(params, groups, select)?;
        let raw_norms = slots
            .iter()
            .flatten()
            .map(|s| norm(&s.grad))
            .collect::<Result<Vec<_>>>()?;
        for (group, group_slots) in groups.iter_mut().zip(slots.iter_mut()) {
            let (chain, closure) = (&group.transforms, &mut group.closure);
            apply_chain(chain, closure, group_slots, *step_count, &group.name)?;
        }
        let mut update_norm = transformed_norm(groups, &slots, &raw_norms)?;
        if let Some(max) = config.global_clip_norm {
            let coef = clip_coef(&update_norm, max)?;
            for slot in slots.iter_mut().flatten() {
                let _ = slot.grad.f_mul_(&coef)?;
            }
            update_norm = update_norm.f_mul(&coef)?;
        }
        let (norms, update_grad_norm) = fetch(&raw_norms, &update_norm)?;
        let report = stats(lr, groups, &slots, &norms, update_grad_norm, *step_count)?;
        let updates: Vec<(usize, Tensor)> = slots
            .into_iter()
            .flatten()
            .map(|s| (s.index, s.grad))
            .collect();
        for (index, grad) in updates {
            let p = &mut params[index];
            let g = &groups[p.group];
            let lr = lr * g.lr_mult;
            rules::update(
                config,
                &mut p.tensor,
                &grad,
                &mut p.state,
                lr,
                g.weight_decay,
            )?;
        }
        Ok(report)
    }
}

/// Per group, the gradients of its selected parameters that have one (none for frozen groups).
fn collect_grads<'p>(
    params: &'p [Param],
    groups: &[Group],
    select: &dyn Fn(&str) -> bool,
) -> Result<Vec<Vec<GradSlot<'p>>>> {
    let mut slots: Vec<Vec<GradSlot<'p>>> = groups.iter().map(|_| Vec::new()).collect();
    for (index, p) in params.iter().enumerate().filter(|(_, p)| select(&p.name)) {
        let grad = p.tensor.f_grad()?;
        if grad.defined() && !groups[p.group].frozen && !p.frozen {
            slots[p.group].push(GradSlot {
                name: &p.name,
                index,
                grad,
            });
        }
    }
    Ok(slots)
}

/// The norm of all gradients after the groups' transforms; groups without transforms reuse
/// `raw_norms` (one per slot, in order) instead of reading their gradients again.
fn transformed_norm(
    groups: &[Group],
    slots: &[Vec<GradSlot<'_>>],
    raw_norms: &[Tensor],
) -> Result<Tensor> {
    let mut raw = raw_norms.iter();
    let mut norms = Vec::with_capacity(raw_norms.len());
    for (group, group_slots) in groups.iter().zip(slots) {
        for (slot, raw_norm) in group_slots.iter().zip(raw.by_ref()) {
            norms.push(if group.transforms.is_empty() {
                raw_norm.shallow_clone()
            } else {
                norm(&slot.grad)?
            });
        }
    }
    combined_norm(&norms)
}

/// Reads the per-parameter norms and the update norm back to the host: the one synchronisation
/// of a step.
fn fetch(raw_norms: &[Tensor], update_norm: &Tensor) -> Result<(Vec<f64>, f64)> {
    let Some(first) = raw_norms.first() else {
        return Ok((Vec::new(), 0.0));
    };
    let update_norm = update_norm.f_reshape([1])?.f_to_device(first.device())?;
    let fetched = Tensor::f_cat(&[Tensor::f_stack(raw_norms, 0)?, update_norm], 0)?;
    let mut norms = Vec::<f64>::try_from(&fetched)?;
    let update = norms.pop().unwrap_or(0.0);
    Ok((norms, update))
}

/// Builds the step's report from the fetched per-parameter norms, failing on non-finite values.
fn stats(
    lr: f64,
    groups: &[Group],
    slots: &[Vec<GradSlot<'_>>],
    norms: &[f64],
    update_grad_norm: f64,
    step: u64,
) -> Result<StepReport> {
    let mut norms = norms.iter();
    let mut group_grad_norms = Vec::new();
    let mut total_sq = 0.0;
    for (group, group_slots) in groups.iter().zip(slots) {
        let mut sq = 0.0;
        for (slot, &norm) in group_slots.iter().zip(norms.by_ref()) {
            if !norm.is_finite() {
                return Err(Error::NonFinite(format!(
                    "the gradient of {} (group \"{}\") holds NaN or infinity at step {step}; \
                     lower the learning rate, set global_clip_norm, or check the loss",
                    slot.name, group.name
                )));
            }
            sq += norm * norm;
        }
        if group.size > 0 && !group.frozen {
            group_grad_norms.push((group.name.clone(), sq.sqrt()));
        }
        total_sq += sq;
    }
    if !update_grad_norm.is_finite() {
        return Err(Error::NonFinite(format!(
            "the gradients became NaN or infinite in the groups' transforms at step {step} \
             (the gradients from backward were finite); check the closures and scale factors"
        )));
    }
    Ok(StepReport {
        lr,
        global_grad_norm: total_sq.sqrt(),
        group_grad_norms,
        update_grad_norm,
    })
}

impl std::fmt::Debug for Optimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Optimizer")
            .field("config", &self.config)
            .field(
                "params",
                &self.params.iter().map(|p| &p.name).collect::<Vec<_>>(),
            )
            .field("step_count", &self.step_count)
            .finish()
    }
}
