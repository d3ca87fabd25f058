//! i-ResNet density estimation on images: training with test bits/dim every epoch, an EMA of the
//! weights for evaluation, best and last checkpoints, samples, reconstructions and curves.

use super::image_run::{train_image_task, ImageTask};
use super::{derived_seed, PROBE_STREAM, SAMPLE_STREAM, TEST_STREAM};
use crate::checkpoint;
use crate::config::RunConfig;
use crate::data::ImageDataset;
use crate::flows::FlowContext;
use crate::models::ImageFlow;
use crate::plots;
use crate::train::{Ema, LoopOutcome, Weights};
use crate::{Error, Result};
use std::path::Path;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Images per evaluation batch.
const EVAL_BATCH: i64 = 256;
/// Test images shown in `reconstructions.png`.
const RECONSTRUCTED: i64 = 32;

/// Maximum likelihood (mean bits/dim) on the training set.
struct DensityTask<'a> {
    model: &'a ImageFlow,
    config: &'a RunConfig,
    device: Device,
}

impl ImageTask for DensityTask<'_> {
    const CURVES_TITLE: &'static str = "i-ResNet density: loss and test bits/dim";

    fn batch_loss(
        &self,
        images: &Tensor,
        _labels: &Tensor,
        _levels: u32,
        step: u64,
    ) -> Result<(Tensor, Vec<(String, f64)>)> {
        let seed = derived_seed(self.config.seed, PROBE_STREAM, step);
        tch::manual_seed(seed as i64);
        let mut ctx = FlowContext::train(self.config.train.logdet, seed);
        let bpd = self
            .model
            .bits_per_dim(&images.to_device(self.device), &mut ctx)?
            .mean(Kind::Float);
        Ok((bpd, Vec::new()))
    }

    fn test_metric(&self, test: &ImageDataset) -> Result<(&'static str, f64, f64)> {
        let (model, config, device) = (self.model, self.config, self.device);
        let bpd = test_bits_per_dim(model, config, test, device, Dequantization::Uniform)?;
        Ok(("test_bits_per_dim", bpd, bpd))
    }
}

/// How test images are dequantised for bits/dim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dequantization {
    /// `(x + u) / L`, `u ~ U[0, 1)` (the standard, SPEC section 1), with a fixed seed.
    Uniform,
    /// `(x + 1/2) / L`: deterministic, for comparing implementations exactly.
    Midpoint,
}

/// Mean bits/dim over a test set with the evaluation estimator.
pub fn test_bits_per_dim(
    model: &ImageFlow,
    config: &RunConfig,
    test: &ImageDataset,
    device: Device,
    dequantization: Dequantization,
) -> Result<f64> {
    tch::manual_seed(derived_seed(config.seed, TEST_STREAM, 0) as i64);
    let mut ctx = FlowContext::eval(config.eval.logdet, config.seed);
    let levels = config.image_flow()?.levels as f64;
    let mut total = 0.0;
    for chunk in test.images.split(EVAL_BATCH, 0) {
        let chunk = chunk.to_device(device);
        let bpd = tch::no_grad(|| match dequantization {
            Dequantization::Uniform => model.bits_per_dim(&chunk, &mut ctx),
            Dequantization::Midpoint => {
                let x = (chunk.to_kind(Kind::Float) + 0.5) / levels;
                model.bits_per_dim_dequantized(&x, &mut ctx)
            }
        })?;
        total += bpd
            .to_kind(Kind::Double)
            .sum(Kind::Double)
            .double_value(&[]);
    }
    Ok(total / test.len() as f64)
}

pub(crate) fn build(config: &RunConfig, device: Device) -> Result<(VarStore, ImageFlow)> {
    tch::manual_seed(config.seed as i64);
    let vs = VarStore::new(device);
    let model = ImageFlow::new(&vs.root(), config.image_flow()?)?;
    Ok((vs, model))
}

/// Trains an image density model; writes `samples.png`, `reconstructions.png` and `curves.png`.
pub fn train(
    config: &RunConfig,
    out_dir: &Path,
    resume: bool,
    device: Device,
) -> Result<LoopOutcome> {
    let (vs, model) = build(config, device)?;
    let task = DensityTask {
        model: &model,
        config,
        device,
    };
    let (outcome, test_set) = train_image_task(&vs, &task, config, out_dir, resume)?;
    write_pictures(&model, config, &test_set, out_dir, device)?;
    Ok(outcome)
}

fn write_pictures(
    model: &ImageFlow,
    config: &RunConfig,
    test: &ImageDataset,
    out_dir: &Path,
    device: Device,
) -> Result<()> {
    let samples = draw_samples(model, config, 64)?;
    plots::save_image_grid(&samples, 8, &out_dir.join("samples.png"))?;
    let (x, x_hat, _) = reconstruct(model, config, test, RECONSTRUCTED, device)?;
    let both = Tensor::cat(&[x, x_hat], 0);
    plots::save_image_grid(&both, 8, &out_dir.join("reconstructions.png"))
}

/// `n` samples at the configured temperature, scaled to `[0, 1]`, on the CPU.
fn draw_samples(model: &ImageFlow, config: &RunConfig, n: i64) -> Result<Tensor> {
    tch::manual_seed(derived_seed(config.seed, SAMPLE_STREAM, 0) as i64);
    let mut ctx = FlowContext::eval(config.eval.logdet, config.seed);
    ctx.inverse = config.eval.inverse;
    Ok(model
        .sample(n, config.eval.temperature, &mut ctx)?
        .clamp(0.0, 1.0)
        .to_device(Device::Cpu))
}

/// The first `n` test images (scaled to `[0, 1)`), their reconstructions `f^{-1}(f(x))`, and the
/// inversion statistics.
fn reconstruct(
    model: &ImageFlow,
    config: &RunConfig,
    test: &ImageDataset,
    n: i64,
    device: Device,
) -> Result<(Tensor, Tensor, crate::flows::InverseStats)> {
    let levels = config.image_flow()?.levels as f64;
    let x = (test
        .images
        .narrow(0, 0, n.min(test.len() as i64))
        .to_kind(Kind::Float)
        + 0.5)
        / levels;
    let mut ctx = FlowContext::eval(config.eval.logdet, config.seed);
    ctx.inverse = config.eval.inverse;
    let (x_hat, _) = model.reconstruct(&x.to_device(device), &mut ctx)?;
    Ok((x, x_hat.to_device(Device::Cpu), ctx.inverse_stats))
}

/// Loads a run with the averaged weights when the run kept them.
fn load_run(
    run_dir: &Path,
    device: Device,
    weights: Weights,
) -> Result<(RunConfig, VarStore, ImageFlow)> {
    let (config, tensors, path) = super::load_checkpoint(run_dir)?;
    let (vs, model) = build(&config, device)?;
    checkpoint::restore_vars(&vs, &tensors, &path)?;
    Ema::load_into_weights(&vs, &tensors, weights);
    super::refine_for_evaluation(&model.residual_nets());
    Ok((config, vs, model))
}

/// `genflow eval` of an image density run: bits/dim on the whole test set, inversion of test
/// images, and the Lipschitz constants.
pub fn evaluate(run_dir: &Path, device: Device, weights: Weights) -> Result<serde_json::Value> {
    let (config, _vs, model) = load_run(run_dir, device, weights)?;
    let (_, test) = super::load_image_data(&config)?;
    let bpd = test_bits_per_dim(&model, &config, &test, device, Dequantization::Uniform)?;
    let midpoint = test_bits_per_dim(&model, &config, &test, device, Dequantization::Midpoint)?;
    let (x, x_hat, stats) = reconstruct(&model, &config, &test, EVAL_BATCH, device)?;
    let err = (x_hat - x).abs().max().double_value(&[]);
    Ok(serde_json::json!({
        "dataset": config.dataset()?.to_string(),
        "test_images": test.len(),
        "test_bits_per_dim": bpd,
        "test_bits_per_dim_midpoint": midpoint,
        "logdet_estimator": serde_json::to_value(config.eval.logdet).map_err(|e| Error::config(e.to_string()))?,
        "inverse_max_abs_err": err,
        "inverse_iters_max": stats.max_iters,
        "inverse_residual_max": stats.max_residual,
        "lipschitz_max": super::lipschitz_max(&model.residual_nets())?,
    }))
}

/// Writes an 8-wide grid of `n` samples to a PNG file.
pub fn sample(run_dir: &Path, n: i64, out: &Path, device: Device) -> Result<()> {
    if out.extension().and_then(|e| e.to_str()) != Some("png") {
        return Err(Error::config(format!(
            "--out {} must end in .png for image runs",
            out.display()
        )));
    }
    let (config, _vs, model) = load_run(run_dir, device, Weights::Averaged)?;
    plots::save_image_grid(&draw_samples(&model, &config, n)?, 8, out)
}
