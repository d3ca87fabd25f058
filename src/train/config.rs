//! The `[train]` settings every task shares: how long a run is, how often it logs, evaluates and
//! checkpoints, the moving average of the weights and the wall-clock budget.
//!
//! A task may add settings of its own training objective to the same `[train]` table (the flows'
//! `logdet` estimator, for example); those live beside the task.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Training settings of a run (`[train]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimiser steps; when absent, `epochs` passes over the training set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u64>,
    /// Passes over the training set (tasks with a finite training set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u64>,
    /// Examples per optimiser step.
    pub batch_size: i64,
    /// Checkpoint every this many steps (and at the end).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Append a line to `metrics.jsonl` every this many steps.
    #[serde(default = "default_log_every")]
    pub log_every: u64,
    /// Evaluate on the test set every this many steps (default: every epoch, when the task has
    /// epochs; never otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_every: Option<u64>,
    /// Decay of an exponential moving average of the weights, used for evaluation and pictures
    /// (e.g. 0.999).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_decay: Option<f64>,
    /// Wall-clock budget of one `genflow train` invocation in minutes: when it is spent, training
    /// ends early as if the last step were reached (checkpoint, final evaluation, pictures), and
    /// the log and `metrics.jsonl` say so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_minutes: Option<f64>,
    /// What a NaN or infinite loss or gradient does: `"stop"` the run (default; the last good
    /// checkpoint stays), or `"rollback"`: reload the last good checkpoint, halve the learning rate,
    /// skip the batch that failed, and go on (at most `max_rollbacks` times, each logged).
    #[serde(default)]
    pub on_nan: OnNan,
    /// Rollbacks a run may take before it stops (`on_nan = "rollback"`).
    #[serde(default = "default_max_rollbacks")]
    pub max_rollbacks: u32,
}

/// What a non-finite loss or gradient does to a run (`train.on_nan`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnNan {
    /// Stop the run; the last good checkpoint stays.
    #[default]
    Stop,
    /// Reload the last good checkpoint, halve the learning rate, skip the batch, go on.
    Rollback,
}

fn default_max_rollbacks() -> u32 {
    3
}

fn default_checkpoint_every() -> u64 {
    1000
}

fn default_log_every() -> u64 {
    50
}

/// How long a run is and when it evaluates, once the size of its training set is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Optimiser steps of the whole run.
    pub steps: u64,
    /// Steps per pass over the training set, for tasks with a finite one.
    pub steps_per_epoch: Option<u64>,
    /// Evaluate every this many steps (and at the end); `None`: only at the end, if ever.
    pub eval_every: Option<u64>,
}

impl TrainConfig {
    /// Checks ranges and consistency; the message names the key to change.
    pub fn validate(&self) -> Result<()> {
        if self.steps.is_none() && self.epochs.is_none() {
            return Err(Error::config("set train.steps or train.epochs"));
        }
        let positive = [
            ("train.steps", self.steps.unwrap_or(1) as i64),
            ("train.epochs", self.epochs.unwrap_or(1) as i64),
            ("train.batch_size", self.batch_size),
            ("train.checkpoint_every", self.checkpoint_every as i64),
            ("train.log_every", self.log_every as i64),
            ("train.eval_every", self.eval_every.unwrap_or(1) as i64),
        ];
        for (key, v) in positive {
            if v <= 0 {
                return Err(Error::config(format!("{key} must be positive, got {v}")));
            }
        }
        crate::limits::check(
            "train.batch_size",
            self.batch_size,
            crate::limits::MAX_BATCH,
        )?;
        if let Some(d) = self.ema_decay {
            if !(0.0..1.0).contains(&d) {
                return Err(Error::config(format!(
                    "train.ema_decay must lie in [0, 1), got {d}"
                )));
            }
        }
        if let Some(m) = self.max_minutes {
            if !(m.is_finite() && m > 0.0) {
                return Err(Error::config(format!(
                    "train.max_minutes = {m}: the time budget must be a positive number of minutes (or left out)"
                )));
            }
        }
        Ok(())
    }

    /// The plan of a run over a training set of `train_len` examples (`None`: examples are drawn
    /// afresh every step, so only `steps` can set the length).
    pub fn plan(&self, train_len: Option<usize>) -> Result<Plan> {
        let Some(n) = train_len else {
            let steps = self.steps.ok_or_else(|| {
                Error::config(
                    "this task draws fresh data every step and has no epochs: set train.steps",
                )
            })?;
            return Ok(Plan {
                steps,
                steps_per_epoch: None,
                eval_every: self.eval_every,
            });
        };
        let per_epoch = (n as u64).div_ceil(self.batch_size.max(1) as u64).max(1);
        let steps = self
            .steps
            .unwrap_or_else(|| self.epochs.unwrap_or(1) * per_epoch);
        Ok(Plan {
            steps,
            steps_per_epoch: Some(per_epoch),
            eval_every: Some(self.eval_every.unwrap_or(per_epoch)),
        })
    }
}
