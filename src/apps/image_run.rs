//! The training run shared by the image tasks (density and classifier): epochs over a data set in
//! a seeded order, a test evaluation every epoch (with the moving average of the weights when the
//! run keeps one), best and last checkpoints, exact resume and `curves.png`. A task only says how a
//! batch becomes a loss and how a test set becomes a score ([`ImageTask`]).

use super::{image_run_steps, load_image_data, start_run, training_batch, write_curves};
use crate::config::RunConfig;
use crate::data::ImageDataset;
use crate::train::{self, Ema, Evaluation, LoopOutcome, Objective};
use crate::Result;
use std::path::Path;
use tch::{nn::VarStore, Tensor};

/// What distinguishes one image task from another.
pub(crate) trait ImageTask {
    /// Title of the run's `curves.png`.
    const CURVES_TITLE: &'static str;
    /// The loss of training step `step` on a batch (images as stored, with `levels` grey levels,
    /// and their labels) and extra scalars to log with it.
    fn batch_loss(
        &self,
        images: &Tensor,
        labels: &Tensor,
        levels: u32,
        step: u64,
    ) -> Result<(Tensor, Vec<(String, f64)>)>;
    /// The test metric of the current weights: its name, its value, and the score to minimise
    /// (the best score so far is kept as `best.safetensors`).
    fn test_metric(&self, test: &ImageDataset) -> Result<(&'static str, f64, f64)>;
}

/// An [`ImageTask`] over a training set, with the test set of the evaluations and the average.
struct ImageObjective<'a, T> {
    task: &'a T,
    config: &'a RunConfig,
    train_set: ImageDataset,
    test_set: ImageDataset,
    ema: Option<Ema>,
}

impl<T: ImageTask> Objective for ImageObjective<'_, T> {
    fn loss(&mut self, step: u64) -> Result<(Tensor, Vec<(String, f64)>)> {
        let batch = self.config.train.batch_size;
        let (images, labels) = training_batch(&self.train_set, self.config.seed, step, batch)?;
        self.task
            .batch_loss(&images, &labels, self.train_set.levels, step)
    }

    fn after_step(&mut self, _step: u64) -> Result<()> {
        if let Some(ema) = &mut self.ema {
            ema.update();
        }
        Ok(())
    }

    fn evaluate(&mut self, _step: u64) -> Result<Option<Evaluation>> {
        let (task, test) = (self.task, &self.test_set);
        let (name, value, score) = match &mut self.ema {
            Some(ema) => ema.with_averaged(|| task.test_metric(test))?,
            None => task.test_metric(test)?,
        };
        Ok(Some(Evaluation {
            metrics: vec![(name.to_string(), value)],
            score,
        }))
    }

    fn extra_state(&self) -> Vec<(String, Tensor)> {
        self.ema.as_ref().map(Ema::state).unwrap_or_default()
    }
}

/// Trains `task`, whose parameters live in `vs`, as `config` says (continuing from the checkpoint
/// in `out_dir` when `resume`), and draws `curves.png`. Afterwards `vs` holds the averaged weights
/// when the run keeps an average. Returns how the loop ended and the evaluations' test set
/// (`data.test_size` images).
pub(crate) fn train_image_task<T: ImageTask>(
    vs: &VarStore,
    task: &T,
    config: &RunConfig,
    out_dir: &Path,
    resume: bool,
) -> Result<(LoopOutcome, ImageDataset)> {
    let (train_set, test_set) = load_image_data(config)?;
    let test_set = match config.data.test_size {
        Some(n) => test_set.subset(n.min(test_set.len()))?,
        None => test_set,
    };
    let (per_epoch, steps) = image_run_steps(config, train_set.len());
    let eval_every = Some(config.train.eval_every.unwrap_or(per_epoch));
    let (mut optimizer, start, tensors, settings) =
        start_run(vs, config, out_dir, resume, steps, eval_every)?;
    let mut ema = config.train.ema_decay.map(|d| Ema::new(vs, d));
    if let (Some(ema), true) = (&mut ema, resume) {
        ema.load(&tensors)?;
    }
    let mut objective = ImageObjective {
        task,
        config,
        train_set,
        test_set,
        ema,
    };
    let outcome = train::run(vs, &mut optimizer, &mut objective, &settings, start)?;
    if let Some(ema) = &mut objective.ema {
        ema.swap();
    }
    write_curves(out_dir, T::CURVES_TITLE)?;
    Ok((outcome, objective.test_set))
}
