//! An exponential moving average of the trainable weights, `theta_ema <- d theta_ema + (1 - d) theta`,
//! used for evaluation (Polyak averaging; as in Glow and Residual Flows' evaluation). A task may
//! average only some weights (a GAN its generator's, as in Karras et al. 2018 and BigGAN).

use super::{Evaluation, Objective, Update};
use crate::{Error, Result};
use std::collections::BTreeMap;
use tch::{nn::VarStore, Tensor};

/// Which weights of a checkpoint to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Weights {
    /// The moving averages when the run kept them, else the live weights.
    #[default]
    Averaged,
    /// The weights of the last optimiser step.
    Live,
}

/// The checkpoint prefix of the averaged weights.
pub const EMA_PREFIX: &str = "ema.";

/// Moving averages of every trainable variable of a store.
///
/// The averages start at the weights after the first optimiser step, not at construction, so
/// that data-dependent initialisations (ActNorm) done by the first forward pass are not averaged
/// with the pre-initialisation values.
#[derive(Debug)]
pub struct Ema {
    decay: f64,
    started: bool,
    /// `(name, live variable, average)`.
    entries: Vec<(String, Tensor, Tensor)>,
}

impl Ema {
    /// Averages of the trainable variables of `vs` whose names `keep` accepts, starting at their
    /// current values.
    pub fn new(vs: &VarStore, decay: f64, keep: &dyn Fn(&str) -> bool) -> Self {
        let mut entries: Vec<(String, Tensor, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(name, t)| t.requires_grad() && keep(name))
            .map(|(name, t)| {
                let avg = t.detach().copy();
                (name, t, avg)
            })
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ema {
            decay,
            started: false,
            entries,
        }
    }

    /// One averaging step after an optimiser step (the first one copies the weights).
    pub fn update(&mut self) {
        if !self.started {
            self.started = true;
            for (_, live, avg) in &mut self.entries {
                crate::nn::assign(avg, live);
            }
            return;
        }
        tch::no_grad(|| {
            for (_, live, avg) in &mut self.entries {
                let _ = avg.g_mul_scalar_(self.decay);
                let _ = avg.g_add_(&(live.detach() * (1.0 - self.decay)));
            }
        });
    }

    /// Exchanges the live weights and the averages (call twice to restore).
    pub fn swap(&mut self) {
        for (_, live, avg) in &mut self.entries {
            let current = live.detach().copy();
            crate::nn::assign(live, avg);
            crate::nn::assign(avg, &current);
        }
    }

    /// Runs `f` with the averaged weights in place, then restores the live ones.
    pub fn with_averaged<T>(&mut self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.swap();
        let out = f();
        self.swap();
        out
    }

    /// The averages under `ema.<name>`, for checkpoints.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.entries
            .iter()
            .map(|(n, _, a)| (format!("{EMA_PREFIX}{n}"), a.shallow_clone()))
            .collect()
    }

    /// Restores the averages from checkpoint tensors (missing entries are an error).
    pub fn load(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        for (name, _, avg) in &mut self.entries {
            let key = format!("{EMA_PREFIX}{name}");
            let saved = tensors.get(&key).ok_or_else(|| {
                Error::config(format!(
                    "checkpoint lacks '{key}' although train.ema_decay is set"
                ))
            })?;
            crate::nn::assign(avg, &saved.to_kind(avg.kind()).to_device(avg.device()));
        }
        self.started = true;
        Ok(())
    }

    /// Copies the averages into the live weights when `weights` asks for them (for evaluating a
    /// loaded checkpoint).
    pub fn load_into_weights(vs: &VarStore, tensors: &BTreeMap<String, Tensor>, weights: Weights) {
        if weights == Weights::Live {
            return;
        }
        for (name, t) in vs.variables() {
            if let Some(avg) = tensors.get(&format!("{EMA_PREFIX}{name}")) {
                crate::nn::assign(&t, &avg.to_kind(t.kind()).to_device(t.device()));
            }
        }
    }
}

/// An [`Objective`] whose weights are averaged: the average is updated after every optimiser
/// step, evaluations run with the averaged weights in place, and checkpoints keep the averages
/// (under [`EMA_PREFIX`]). After training, [`Averaged::into_averaged_weights`] leaves the averages
/// in the model for pictures and the final evaluation.
pub struct Averaged<O> {
    pub inner: O,
    ema: Ema,
}

impl<O: Objective> Averaged<O> {
    /// Averages the trainable variables of `vs` that `keep` accepts with `decay` around `inner`;
    /// a resumed run passes the checkpoint's tensors to continue its average.
    pub fn new(
        inner: O,
        vs: &VarStore,
        decay: f64,
        keep: &dyn Fn(&str) -> bool,
        resumed: Option<&BTreeMap<String, Tensor>>,
    ) -> Result<Self> {
        let mut ema = Ema::new(vs, decay, keep);
        if let Some(tensors) = resumed {
            ema.load(tensors)?;
        }
        Ok(Averaged { inner, ema })
    }

    /// Puts the averaged weights in place of the live ones (after the last step).
    pub fn into_averaged_weights(mut self) -> O {
        self.ema.swap();
        self.inner
    }
}

impl<O: Objective> Objective for Averaged<O> {
    fn loss(&mut self, step: u64) -> Result<(Tensor, Vec<(String, f64)>)> {
        self.inner.loss(step)
    }

    fn update(&mut self, step: u64, optimizer: &mut crate::optim::Optimizer) -> Result<Update> {
        self.inner.update(step, optimizer)
    }

    fn after_step(&mut self, step: u64) -> Result<()> {
        self.inner.after_step(step)?;
        self.ema.update();
        Ok(())
    }

    fn evaluate(&mut self, step: u64) -> Result<Option<Evaluation>> {
        let inner = &mut self.inner;
        self.ema.with_averaged(|| inner.evaluate(step))
    }

    fn extra_state(&self) -> Vec<(String, Tensor)> {
        let mut state = self.inner.extra_state();
        state.extend(self.ema.state());
        state
    }

    fn restore(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        self.inner.restore(tensors)?;
        self.ema.load(tensors)
    }
}
