//! The training objective shared by the image tasks (density and classifier): epochs over a data
//! set in a seeded order ([`ImageDataset::epoch_batch`]) and a test metric at every evaluation. A
//! task only says how a batch becomes a loss and how a test set becomes a score ([`BatchLoss`]).

use super::Training;
use crate::config::RunConfig;
use crate::data::{ImageDataConfig, ImageDataset};
use crate::train::{Evaluation, Objective};
use crate::{Error, Result};
use tch::Tensor;

/// What distinguishes one image task's training from another's.
pub(crate) trait BatchLoss {
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

/// A [`BatchLoss`] over a training set, with the test set of the evaluations.
struct ImageEpochs<'a, T> {
    task: &'a T,
    train_set: ImageDataset,
    test_set: ImageDataset,
    seed: u64,
    batch_size: usize,
}

impl<T: BatchLoss> Objective for ImageEpochs<'_, T> {
    fn loss(&mut self, step: u64) -> Result<(Tensor, Vec<(String, f64)>)> {
        let (images, labels) = self
            .train_set
            .epoch_batch(self.seed, step, self.batch_size)?;
        self.task
            .batch_loss(&images, &labels, self.train_set.levels, step)
    }

    fn evaluate(&mut self, _step: u64) -> Result<Option<Evaluation>> {
        let (name, value, score) = self.task.test_metric(&self.test_set)?;
        Ok(Some(Evaluation {
            metrics: vec![(name.to_string(), value)],
            score,
        }))
    }
}

/// The training of `task` on the images of `data` as `run` says: epochs over the training set
/// and an evaluation on `data.test_size` test images every `train.eval_every` steps (default:
/// every epoch).
pub(crate) fn image_training<'a, T: BatchLoss>(
    task: &'a T,
    data: &ImageDataConfig,
    expected_shape: [i64; 3],
    run: &RunConfig,
) -> Result<Training<'a>> {
    let (train_set, test_set) = training_sets(data, expected_shape, "model.in_shape")?;
    let plan = run.train.plan(Some(train_set.len()))?;
    Ok(Training {
        objective: Box::new(ImageEpochs {
            task,
            train_set,
            test_set,
            seed: run.seed,
            batch_size: run.train.batch_size as usize,
        }),
        plan,
    })
}

/// The training set and the evaluation subset of the test set of `data`, checked to be non-empty
/// and of the model's `expected_shape` (`shape_key` names the model's setting in the error).
pub(crate) fn training_sets(
    data: &ImageDataConfig,
    expected_shape: [i64; 3],
    shape_key: &str,
) -> Result<(ImageDataset, ImageDataset)> {
    let train_set = data.load_train()?;
    let test_set = data.evaluation_subset(data.load_test()?)?;
    for (split, set) in [("training", &train_set), ("test", &test_set)] {
        if set.is_empty() {
            return Err(Error::config(format!(
                "the {split} split of {} is empty; check data.dir and data.train_subset",
                data.dataset
            )));
        }
        if set.shape() != expected_shape {
            return Err(Error::config(format!(
                "{} images are {:?} but the model takes {expected_shape:?}; set {shape_key} to match",
                data.dataset,
                set.shape()
            )));
        }
    }
    Ok((train_set, test_set))
}
