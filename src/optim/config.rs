//! The optimiser's configuration: plain data, read from TOML (`[optim]`) or written in code.
//!
//! Every field but `kind` and `lr` has a serde default equal to PyTorch's default for the
//! optimiser of the same name (`torch.optim`, version 2.13). Unknown keys are errors
//! (`deny_unknown_fields`), and [`OptimConfig::validate`] rejects out-of-range values and options
//! that the chosen `kind` would silently ignore.

use serde::{Deserialize, Serialize};

use super::schedule::ScheduleConfig;
use super::transforms::TransformConfig;
use crate::{Error, Result};

/// The update rule. Each one follows PyTorch's single-tensor implementation of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimKind {
    /// Stochastic gradient descent with optional (Nesterov) momentum, `torch.optim.SGD`.
    Sgd,
    /// Adam (Kingma & Ba 2015, Algorithm 1), L2 weight decay added to the gradient.
    Adam,
    /// AdamW (Loshchilov & Hutter 2019): Adam with decoupled weight decay `theta *= 1 - lr*wd`.
    AdamW,
    /// Adamax (Kingma & Ba 2015, Algorithm 2, the infinity-norm Adam); the official i-ResNet optimiser.
    Adamax,
    /// RMSprop (Hinton, lecture 6e), optionally centred (Graves 2013) and with momentum.
    RmsProp,
}

impl OptimKind {
    /// The name used in TOML (`"sgd"`, `"adam"`, `"adamw"`, `"adamax"`, `"rmsprop"`).
    pub fn name(self) -> &'static str {
        match self {
            OptimKind::Sgd => "sgd",
            OptimKind::Adam => "adam",
            OptimKind::AdamW => "adamw",
            OptimKind::Adamax => "adamax",
            OptimKind::RmsProp => "rmsprop",
        }
    }

    /// PyTorch's default weight decay: `1e-2` for AdamW, 0 for the others.
    pub fn default_weight_decay(self) -> f64 {
        match self {
            OptimKind::AdamW => 1e-2,
            _ => 0.0,
        }
    }
}

impl std::fmt::Display for OptimKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The `[optim]` table. See the [module documentation](super) for the TOML form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// The update rule.
    pub kind: OptimKind,
    /// Base learning rate (before the schedule and the groups' `lr_mult`).
    pub lr: f64,
    /// `(beta1, beta2)` of Adam, AdamW and Adamax. Default `(0.9, 0.999)`.
    #[serde(default = "default_betas")]
    pub betas: (f64, f64),
    /// The denominator's epsilon of Adam, AdamW, Adamax and RMSprop. Default `1e-8`.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Momentum of SGD and RMSprop. Default 0.
    #[serde(default)]
    pub momentum: f64,
    /// Dampening of SGD's momentum. Default 0.
    #[serde(default)]
    pub dampening: f64,
    /// Nesterov momentum for SGD (needs `momentum > 0` and `dampening = 0`). Default false.
    #[serde(default)]
    pub nesterov: bool,
    /// Weight decay of the default group; `None` means PyTorch's default for `kind`
    /// ([`OptimKind::default_weight_decay`]). L2 (added to the gradient) for all kinds but AdamW,
    /// whose decay is decoupled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// RMSprop's smoothing constant. Default 0.99.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Centred RMSprop (divides by an estimate of the gradient's variance). Default false.
    #[serde(default)]
    pub centered: bool,
    /// Learning-rate schedule. Default constant.
    #[serde(default)]
    pub schedule: ScheduleConfig,
    /// Clip the gradient of all non-frozen parameters together to this L2 norm, after the groups'
    /// transforms (as `torch.nn.utils.clip_grad_norm_`). Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_clip_norm: Option<f64>,
    /// Parameter groups, matched in order; the first matching pattern wins.
    #[serde(default)]
    pub groups: Vec<GroupConfig>,
    /// Ask the trainer to log the gradient statistics of each step (the optimiser computes them
    /// always; this flag only tells the trainer to write them to `metrics.jsonl`). Default false.
    #[serde(default)]
    pub log_grad_stats: bool,
}

/// One parameter group: the parameters whose VarStore name matches `pattern`.
///
/// Patterns are globs (the `globset` crate's syntax) over the whole dot-separated name:
/// `*` matches any run of characters *including* dots, so `blocks.0.*` selects everything under
/// `blocks.0`; `?`, `[0-3]` and `{a,b}` work as usual.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Glob over parameter names, e.g. `"blocks.0.*"` or `"*.bias"`.
    pub pattern: String,
    /// Multiplies the (scheduled) learning rate. Default 1.
    #[serde(default = "one")]
    pub lr_mult: f64,
    /// Weight decay of this group; `None` inherits [`OptimConfig::weight_decay`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// Frozen groups are never updated (no decay, no state). Default false.
    #[serde(default)]
    pub frozen: bool,
    /// Gradient transforms, applied in the order given before the update.
    #[serde(default)]
    pub transforms: Vec<TransformConfig>,
}

impl GroupConfig {
    /// A group for `pattern` with the defaults: `lr_mult` 1, inherited weight decay, not frozen, no
    /// transforms. Set the other fields with struct-update syntax.
    pub fn new(pattern: impl Into<String>) -> Self {
        GroupConfig {
            pattern: pattern.into(),
            lr_mult: 1.0,
            weight_decay: None,
            frozen: false,
            transforms: Vec::new(),
        }
    }
}

fn default_betas() -> (f64, f64) {
    (0.9, 0.999)
}
fn default_eps() -> f64 {
    1e-8
}
fn default_alpha() -> f64 {
    0.99
}
fn one() -> f64 {
    1.0
}

impl Default for OptimConfig {
    /// Adam with learning rate `1e-3` and PyTorch's defaults, constant schedule, no groups.
    fn default() -> Self {
        OptimConfig::new(OptimKind::Adam, 1e-3)
    }
}

impl OptimConfig {
    /// The configuration for a run of `run_steps` steps: a schedule left without a length
    /// ([`ScheduleConfig::for_run`]) follows the run's.
    pub fn for_run(&self, run_steps: u64) -> OptimConfig {
        OptimConfig {
            schedule: self.schedule.for_run(run_steps),
            ..self.clone()
        }
    }

    /// `kind` with learning rate `lr` and every other option at PyTorch's default.
    pub fn new(kind: OptimKind, lr: f64) -> Self {
        OptimConfig {
            kind,
            lr,
            betas: default_betas(),
            eps: default_eps(),
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: None,
            alpha: default_alpha(),
            centered: false,
            schedule: ScheduleConfig::default(),
            global_clip_norm: None,
            groups: Vec::new(),
            log_grad_stats: false,
        }
    }

    /// Parses the body of an `[optim]` table (the keys `kind`, `lr`, ... at top level) and validates it.
    pub fn from_toml(text: &str) -> Result<Self> {
        let config: OptimConfig =
            toml::from_str(text).map_err(|e| Error::config(format!("[optim]: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// The weight decay of the default group: the configured one or PyTorch's default for `kind`.
    pub fn effective_weight_decay(&self) -> f64 {
        self.weight_decay
            .unwrap_or(self.kind.default_weight_decay())
    }

    /// Checks ranges (as PyTorch's constructors do), the schedule, the groups' values and
    /// transforms, and that no option is set that `kind` ignores.
    pub fn validate(&self) -> Result<()> {
        let (b1, b2) = self.betas;
        check(
            self.lr >= 0.0 && self.lr.is_finite(),
            "lr",
            self.lr,
            "a finite number >= 0",
        )?;
        check((0.0..1.0).contains(&b1), "betas[0]", b1, "in [0, 1)")?;
        check((0.0..1.0).contains(&b2), "betas[1]", b2, "in [0, 1)")?;
        check(
            self.eps >= 0.0 && self.eps.is_finite(),
            "eps",
            self.eps,
            "finite and >= 0",
        )?;
        check(
            self.momentum >= 0.0 && self.momentum.is_finite(),
            "momentum",
            self.momentum,
            ">= 0",
        )?;
        check(
            (0.0..=1.0).contains(&self.dampening),
            "dampening",
            self.dampening,
            "in [0, 1]",
        )?;
        check(
            (0.0..=1.0).contains(&self.alpha),
            "alpha",
            self.alpha,
            "in [0, 1]",
        )?;
        check_weight_decay("weight_decay", self.weight_decay)?;
        if let Some(c) = self.global_clip_norm {
            check(
                c > 0.0 && c.is_finite(),
                "global_clip_norm",
                c,
                "a finite number > 0",
            )?;
        }
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(Error::config(
                "[optim] nesterov = true needs momentum > 0 and dampening = 0 (as in torch.optim.SGD)",
            ));
        }
        self.check_options_used()?;
        self.schedule.validate()?;
        for (i, group) in self.groups.iter().enumerate() {
            group.validate(i)?;
        }
        Ok(())
    }

    /// Rejects options left at a non-default value that the chosen kind never reads.
    fn check_options_used(&self) -> Result<()> {
        use OptimKind::*;
        let defaults = OptimConfig::new(self.kind, self.lr);
        let options: [(&str, bool, &[OptimKind]); 6] = [
            (
                "betas",
                self.betas != defaults.betas,
                &[Adam, AdamW, Adamax],
            ),
            (
                "eps",
                self.eps != defaults.eps,
                &[Adam, AdamW, Adamax, RmsProp],
            ),
            ("momentum", self.momentum != 0.0, &[Sgd, RmsProp]),
            ("dampening", self.dampening != 0.0, &[Sgd]),
            ("nesterov", self.nesterov, &[Sgd]),
            ("alpha", self.alpha != defaults.alpha, &[RmsProp]),
        ];
        let centered = ("centered", self.centered, &[RmsProp][..]);
        for (name, set, used_by) in options.into_iter().chain([centered]) {
            if set && !used_by.contains(&self.kind) {
                let users: Vec<&str> = used_by.iter().map(|k| k.name()).collect();
                return Err(Error::config(format!(
                    "[optim] {name} has no effect with kind = \"{}\" (it is used by {}); remove it or change kind",
                    self.kind,
                    users.join(", ")
                )));
            }
        }
        Ok(())
    }
}

impl GroupConfig {
    fn validate(&self, index: usize) -> Result<()> {
        let at = format!("groups[{index}] (pattern \"{}\")", self.pattern);
        if !(self.lr_mult >= 0.0 && self.lr_mult.is_finite()) {
            return Err(Error::config(format!(
                "[optim] {at}: lr_mult = {} must be a finite number >= 0",
                self.lr_mult
            )));
        }
        check_weight_decay(&format!("{at}: weight_decay"), self.weight_decay)?;
        for transform in &self.transforms {
            transform
                .validate()
                .map_err(|msg| Error::config(format!("[optim] {at}: {msg}")))?;
        }
        Ok(())
    }
}

fn check_weight_decay(name: &str, value: Option<f64>) -> Result<()> {
    match value {
        Some(wd) => check(
            wd >= 0.0 && wd.is_finite(),
            name,
            wd,
            "a finite number >= 0",
        ),
        None => Ok(()),
    }
}

fn check(ok: bool, name: &str, value: f64, wanted: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "[optim] {name} = {value} must be {wanted}"
        )))
    }
}
