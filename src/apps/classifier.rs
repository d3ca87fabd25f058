//! i-ResNet classification (Behrmann et al. 2019, section 5.1): training with cross-entropy, test
//! accuracy every epoch, best and last checkpoints, and a check that the feature map stays
//! invertible.

use super::image_run::{train_image_task, ImageTask};
use super::{derived_seed, PROBE_STREAM};
use crate::checkpoint;
use crate::config::RunConfig;
use crate::data::ImageDataset;
use crate::flows::FlowContext;
use crate::models::IResNetClassifier;
use crate::train::{Ema, LoopOutcome, Weights};
use crate::Result;
use std::path::Path;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Images per evaluation batch.
const EVAL_BATCH: i64 = 500;
/// Test images whose features are inverted by `genflow eval`.
const INVERTED: i64 = 64;

/// Pixels scaled to `[0, 1]`.
fn scale(images: &Tensor, levels: u32, device: Device) -> Tensor {
    images.to_device(device).to_kind(Kind::Float) / (levels as f64 - 1.0)
}

/// Cross-entropy of the labels on the training set.
struct ClassifierTask<'a> {
    model: &'a IResNetClassifier,
    config: &'a RunConfig,
    device: Device,
}

impl ImageTask for ClassifierTask<'_> {
    const CURVES_TITLE: &'static str = "i-ResNet classifier: loss and test accuracy";

    fn batch_loss(
        &self,
        images: &Tensor,
        labels: &Tensor,
        levels: u32,
        step: u64,
    ) -> Result<(Tensor, Vec<(String, f64)>)> {
        tch::manual_seed(derived_seed(self.config.seed, PROBE_STREAM, step) as i64);
        let logits = self
            .model
            .forward_t(&scale(images, levels, self.device), true)?;
        let y = labels.to_device(self.device);
        let loss = logits.cross_entropy_for_logits(&y);
        let acc = tch::no_grad(|| {
            logits
                .argmax(-1, false)
                .eq_tensor(&y)
                .to_kind(Kind::Float)
                .mean(Kind::Float)
        });
        Ok((loss, vec![("train_accuracy".into(), acc.double_value(&[]))]))
    }

    fn test_metric(&self, test: &ImageDataset) -> Result<(&'static str, f64, f64)> {
        let acc = test_accuracy(self.model, test, self.device)?;
        Ok(("test_accuracy", acc, 1.0 - acc))
    }
}

/// Fraction of test images classified correctly.
pub fn test_accuracy(
    model: &IResNetClassifier,
    test: &ImageDataset,
    device: Device,
) -> Result<f64> {
    let mut correct = 0i64;
    for (x, y) in test
        .images
        .split(EVAL_BATCH, 0)
        .iter()
        .zip(test.labels.split(EVAL_BATCH, 0))
    {
        let logits = tch::no_grad(|| model.forward_t(&scale(x, test.levels, device), false))?;
        correct += logits
            .argmax(-1, false)
            .to_device(Device::Cpu)
            .eq_tensor(&y)
            .sum(Kind::Int64)
            .int64_value(&[]);
    }
    Ok(correct as f64 / test.len() as f64)
}

pub(crate) fn build(config: &RunConfig, device: Device) -> Result<(VarStore, IResNetClassifier)> {
    tch::manual_seed(config.seed as i64);
    let vs = VarStore::new(device);
    let model = IResNetClassifier::new(&vs.root(), config.classifier_model()?)?;
    Ok((vs, model))
}

/// Trains a classifier; writes `curves.png`.
pub fn train(
    config: &RunConfig,
    out_dir: &Path,
    resume: bool,
    device: Device,
) -> Result<LoopOutcome> {
    let (vs, model) = build(config, device)?;
    let task = ClassifierTask {
        model: &model,
        config,
        device,
    };
    let (outcome, _) = train_image_task(&vs, &task, config, out_dir, resume)?;
    Ok(outcome)
}

/// `genflow eval` of a classifier run: test accuracy on the whole test set and the inversion error
/// of the feature map on test images.
pub fn evaluate(run_dir: &Path, device: Device, weights: Weights) -> Result<serde_json::Value> {
    let (config, tensors, path) = super::load_checkpoint(run_dir)?;
    let (vs, model) = build(&config, device)?;
    checkpoint::restore_vars(&vs, &tensors, &path)?;
    Ema::load_into_weights(&vs, &tensors, weights);
    super::refine_for_evaluation(&model.residual_nets());
    let (_, test) = super::load_image_data(&config)?;
    let accuracy = test_accuracy(&model, &test, device)?;
    let x = scale(
        &test.images.narrow(0, 0, INVERTED.min(test.len() as i64)),
        test.levels,
        device,
    );
    let mut ctx = FlowContext::eval(config.eval.logdet, config.seed);
    ctx.inverse = config.eval.inverse;
    let (err, stats) = tch::no_grad(|| -> Result<(f64, crate::flows::InverseStats)> {
        let features = model.features(&x, false)?;
        let back = model.invert_features(&features, &mut ctx)?;
        Ok(((back - &x).abs().max().double_value(&[]), ctx.inverse_stats))
    })?;
    Ok(serde_json::json!({
        "dataset": config.dataset()?.to_string(),
        "test_images": test.len(),
        "test_accuracy": accuracy,
        "inverse_max_abs_err": err,
        "inverse_iters_max": stats.max_iters,
        "lipschitz_max": super::lipschitz_max(&model.residual_nets())?,
    }))
}
