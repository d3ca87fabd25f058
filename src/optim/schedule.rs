//! Learning-rate schedules: a multiplier of the base learning rate as a function of the number `t`
//! of steps already taken (`t = 0` for the first update).
//!
//! With warm-up length `w` (0 = none), every schedule starts with the linear ramp
//! `m(t) = (t + 1) / w` for `t < w` (PyTorch's `LinearLR(start_factor = 1/w, total_iters = w - 1)`),
//! then, with `s = t - w`:
//! * `constant` / `warmup`: `m = 1`;
//! * `cosine` (Loshchilov & Hutter 2017, SGDR eq. 5, one cycle; PyTorch's `CosineAnnealingLR` with
//!   `T_max = total_steps - w`): `m = f + (1 - f) (1 + cos(pi * min(s / (total_steps - w), 1))) / 2`
//!   where `f = final_mult`;
//! * `step` (PyTorch's `StepLR`): `m = gamma ^ floor(s / step_size)`.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A learning-rate schedule, written in TOML as an inline table with a `kind`, e.g.
/// `schedule = { kind = "cosine", warmup_steps = 100, total_steps = 10000 }`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleConfig {
    /// The base learning rate throughout.
    #[default]
    Constant,
    /// Linear warm-up over `warmup_steps` steps, then constant.
    #[serde(rename = "warmup", alias = "linear_warmup")]
    Warmup {
        /// Length of the ramp (>= 1).
        warmup_steps: u64,
    },
    /// Optional warm-up, then a half cosine from 1 down to `final_mult` at `total_steps`, and
    /// `final_mult` after that.
    Cosine {
        /// Length of the ramp (0 = none).
        #[serde(default)]
        warmup_steps: u64,
        /// Step at which the cosine reaches `final_mult` (> `warmup_steps`); default: the run's
        /// length ([`ScheduleConfig::for_run`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total_steps: Option<u64>,
        /// Final multiplier, in [0, 1]. Default 0.
        #[serde(default)]
        final_mult: f64,
    },
    /// Optional warm-up, then multiply by `gamma` every `step_size` steps.
    Step {
        /// Length of the ramp (0 = none).
        #[serde(default)]
        warmup_steps: u64,
        /// Steps between decays (>= 1).
        step_size: u64,
        /// Decay factor (> 0). Default 0.1.
        #[serde(default = "default_gamma")]
        gamma: f64,
    },
}

fn default_gamma() -> f64 {
    0.1
}

impl ScheduleConfig {
    /// The multiplier `m(t)` of the base learning rate for the update that follows `t` completed steps.
    pub fn multiplier(&self, t: u64) -> f64 {
        let warmup = match *self {
            ScheduleConfig::Constant => 0,
            ScheduleConfig::Warmup { warmup_steps }
            | ScheduleConfig::Cosine { warmup_steps, .. }
            | ScheduleConfig::Step { warmup_steps, .. } => warmup_steps,
        };
        if t < warmup {
            return (t + 1) as f64 / warmup as f64;
        }
        let s = t - warmup;
        match *self {
            ScheduleConfig::Constant | ScheduleConfig::Warmup { .. } => 1.0,
            ScheduleConfig::Cosine {
                total_steps,
                final_mult,
                ..
            } => {
                // unset only before `for_run`; a schedule without a length keeps the base rate
                let Some(total_steps) = total_steps else {
                    return 1.0;
                };
                let progress = (s as f64 / (total_steps - warmup) as f64).min(1.0);
                final_mult
                    + (1.0 - final_mult) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            ScheduleConfig::Step {
                step_size, gamma, ..
            } => gamma.powf((s / step_size) as f64),
        }
    }

    /// The schedule of a run of `run_steps` steps: a cosine without `total_steps` decays over the
    /// whole run (or, for a run no longer than its warm-up, just past it).
    pub fn for_run(&self, run_steps: u64) -> ScheduleConfig {
        match *self {
            ScheduleConfig::Cosine {
                warmup_steps,
                total_steps: None,
                final_mult,
            } => ScheduleConfig::Cosine {
                warmup_steps,
                total_steps: Some(run_steps.max(warmup_steps + 1)),
                final_mult,
            },
            ref other => other.clone(),
        }
    }

    /// Whether the schedule's length is the run's ([`ScheduleConfig::for_run`]), so that a longer
    /// run has another schedule.
    pub fn follows_run_length(&self) -> bool {
        matches!(
            self,
            ScheduleConfig::Cosine {
                total_steps: None,
                ..
            }
        )
    }

    /// Checks the schedule's parameters.
    pub fn validate(&self) -> Result<()> {
        let problem = match *self {
            ScheduleConfig::Constant => None,
            ScheduleConfig::Warmup { warmup_steps } => {
                (warmup_steps == 0).then_some("warmup_steps must be >= 1".to_string())
            }
            ScheduleConfig::Cosine {
                warmup_steps,
                total_steps,
                final_mult,
            } => {
                let total_steps = total_steps.unwrap_or(u64::MAX);
                if total_steps <= warmup_steps {
                    Some(format!(
                        "total_steps = {total_steps} must exceed warmup_steps = {warmup_steps}"
                    ))
                } else if !(0.0..=1.0).contains(&final_mult) {
                    Some(format!("final_mult = {final_mult} must be in [0, 1]"))
                } else {
                    None
                }
            }
            ScheduleConfig::Step {
                step_size, gamma, ..
            } => {
                if step_size == 0 {
                    Some("step_size must be >= 1".to_string())
                } else if !(gamma > 0.0 && gamma.is_finite()) {
                    Some(format!("gamma = {gamma} must be a finite number > 0"))
                } else {
                    None
                }
            }
        };
        match problem {
            Some(msg) => Err(Error::config(format!("[optim] schedule: {msg}"))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values worked out by hand from the formulas in the module docs.
    #[test]
    fn multipliers_by_hand() {
        let warmup = ScheduleConfig::Warmup { warmup_steps: 4 };
        let got: Vec<f64> = (0..6).map(|t| warmup.multiplier(t)).collect();
        assert_eq!(got, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);

        let step = ScheduleConfig::Step {
            warmup_steps: 0,
            step_size: 2,
            gamma: 0.5,
        };
        let got: Vec<f64> = (0..5).map(|t| step.multiplier(t)).collect();
        assert_eq!(got, [1.0, 1.0, 0.5, 0.5, 0.25]);

        // warm-up 2, then cos over 4 steps: (1 + cos(pi s/4))/2 = 1, 0.8535533905932737, 0.5, ...
        let cosine = ScheduleConfig::Cosine {
            warmup_steps: 2,
            total_steps: Some(6),
            final_mult: 0.0,
        };
        let want = [
            0.5,
            1.0,
            1.0,
            0.8535533905932737,
            0.5,
            0.14644660940672627,
            0.0,
            0.0,
        ];
        for (t, w) in want.iter().enumerate() {
            assert!((cosine.multiplier(t as u64) - w).abs() < 1e-15, "t = {t}");
        }
        // final_mult lifts the floor: 0.2 + 0.8 * 0.5 at the midpoint
        let floor = ScheduleConfig::Cosine {
            warmup_steps: 0,
            total_steps: Some(4),
            final_mult: 0.2,
        };
        assert!((floor.multiplier(2) - 0.6).abs() < 1e-15);
        assert!((floor.multiplier(9) - 0.2).abs() < 1e-15);
    }

    #[test]
    fn rejects_bad_parameters() {
        let bad = [
            ScheduleConfig::Warmup { warmup_steps: 0 },
            ScheduleConfig::Cosine {
                warmup_steps: 5,
                total_steps: Some(5),
                final_mult: 0.0,
            },
            ScheduleConfig::Cosine {
                warmup_steps: 0,
                total_steps: Some(5),
                final_mult: 1.5,
            },
            ScheduleConfig::Step {
                warmup_steps: 0,
                step_size: 0,
                gamma: 0.1,
            },
            ScheduleConfig::Step {
                warmup_steps: 0,
                step_size: 3,
                gamma: 0.0,
            },
        ];
        for schedule in bad {
            assert!(schedule.validate().is_err(), "{schedule:?} accepted");
        }
    }
}
