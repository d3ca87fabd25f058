//! End-to-end jobs behind the CLI (train, evaluate, sample), written against the library API so that
//! they can be called from Rust too. [`train`], [`evaluate`] and [`sample`] dispatch on the run's
//! [`Task`].
pub mod classifier;
pub mod image_density;
mod image_run;
pub mod toy_density;

use crate::checkpoint;
use crate::config::{RunConfig, Task};
use crate::optim::Optimizer;
use crate::train::{self, LoopOutcome, LoopSettings, CHECKPOINT_FILE};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{nn::VarStore, Device, Tensor};

/// Trains `config` into `out_dir` (continuing from its checkpoint when `resume`).
pub fn train(
    config: &RunConfig,
    out_dir: &Path,
    resume: bool,
    device: Device,
) -> Result<LoopOutcome> {
    match config.task {
        Task::ToyDensity => toy_density::train(config, out_dir, resume, device),
        Task::ImageDensity => image_density::train(config, out_dir, resume, device),
        Task::Classifier => classifier::train(config, out_dir, resume, device),
    }
}

/// The evaluation report of a run folder (`genflow eval --json`), with the averaged or the live
/// weights of image runs (toy runs keep no average).
pub fn evaluate(
    run_dir: &Path,
    device: Device,
    weights: crate::train::Weights,
) -> Result<serde_json::Value> {
    let (config, _, _) = load_checkpoint(run_dir)?;
    match config.task {
        Task::ToyDensity => toy_density::evaluate(run_dir, device),
        Task::ImageDensity => image_density::evaluate(run_dir, device, weights),
        Task::Classifier => classifier::evaluate(run_dir, device, weights),
    }
}

/// Writes `n` samples of a run to `out` (`.png`, or `.csv` for toy runs).
pub fn sample(run_dir: &Path, n: i64, out: &Path, device: Device) -> Result<()> {
    let (config, _, _) = load_checkpoint(run_dir)?;
    match config.task {
        Task::ToyDensity => toy_density::sample(run_dir, n, out, device),
        Task::ImageDensity => image_density::sample(run_dir, n, out, device),
        Task::Classifier => Err(Error::config(
            "classifier runs have no samples; use `genflow eval`",
        )),
    }
}

/// A seed that differs per purpose (`stream`) and step, derived from the run's seed.
pub(crate) fn derived_seed(seed: u64, stream: u64, step: u64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream.wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ step
}

/// Seed streams.
pub(crate) const DATA_STREAM: u64 = 1;
pub(crate) const PROBE_STREAM: u64 = 2;
pub(crate) const TEST_STREAM: u64 = 3;
pub(crate) const SAMPLE_STREAM: u64 = 4;

/// The checkpoint of a run folder with its configuration: `(config, tensors, path)`.
pub fn load_checkpoint(
    run_dir: &Path,
) -> Result<(RunConfig, BTreeMap<String, Tensor>, std::path::PathBuf)> {
    if !run_dir.is_dir() {
        return Err(Error::file(
            run_dir,
            "run folder not found (train one with `genflow train --out DIR`)",
        ));
    }
    let path = run_dir.join(CHECKPOINT_FILE);
    let (tensors, meta) = checkpoint::load(&path)?;
    let config = RunConfig::from_toml(&meta.config_toml)?;
    Ok((config, tensors, path))
}

/// The shared start of every training run: the optimiser over `vs`, the step to start from (and
/// the checkpoint's tensors when resuming), the loop settings, and `config.toml` in `out_dir`.
pub(crate) fn start_run(
    vs: &VarStore,
    config: &RunConfig,
    out_dir: &Path,
    resume: bool,
    steps: u64,
    eval_every: Option<u64>,
) -> Result<(Optimizer, u64, BTreeMap<String, Tensor>, LoopSettings)> {
    let mut optimizer = Optimizer::new(vs, &config.optim)?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::file(out_dir, e.to_string()))?;
    let (start, tensors) = if resume {
        train::resume(vs, &mut optimizer, out_dir)?
    } else {
        (0, BTreeMap::new())
    };
    let settings = LoopSettings {
        steps,
        checkpoint_every: config.train.checkpoint_every,
        log_every: config.train.log_every,
        out_dir: out_dir.to_path_buf(),
        config_toml: config.to_toml()?,
        log_grad_stats: config.optim.log_grad_stats,
        eval_every,
        time_budget: config
            .train
            .max_minutes
            .map(|m| std::time::Duration::from_secs_f64(m * 60.0)),
    };
    checkpoint::write_atomically(
        &out_dir.join("config.toml"),
        settings.config_toml.as_bytes(),
    )?;
    Ok((optimizer, start, tensors, settings))
}

/// The largest `prod_i |W_hat_i|_2` over the residual functions of a model (an upper bound on
/// every block's `Lip(g)`), computed exactly per layer.
pub(crate) fn lipschitz_max(nets: &[&crate::nn::ResidualNet]) -> Result<f64> {
    nets.iter()
        .map(|g| g.lipschitz_bound())
        .try_fold(0.0, |acc: f64, l| Ok(acc.max(l?)))
}

/// The training and test sets of an image run (the first `data.train_subset` training images).
pub(crate) fn load_image_data(
    config: &RunConfig,
) -> Result<(crate::data::ImageDataset, crate::data::ImageDataset)> {
    use crate::data::{load, Split};
    let (name, dir) = (config.dataset()?, config.data_dir());
    let mut train_set = load(name, Split::Train, &dir)?;
    if let Some(n) = config.data.train_subset {
        train_set = train_set.subset(n.min(train_set.len()))?;
    }
    Ok((train_set, load(name, Split::Test, &dir)?))
}

/// Optimiser steps per epoch and the total steps of an image run.
pub(crate) fn image_run_steps(config: &RunConfig, train_len: usize) -> (u64, u64) {
    let batch = config.train.batch_size as u64;
    let per_epoch = (train_len as u64).div_ceil(batch).max(1);
    let total = config
        .train
        .steps
        .unwrap_or_else(|| config.train.epochs.unwrap_or(1) * per_epoch);
    (per_epoch, total)
}

/// The batch of training step `step`: epoch `step / per_epoch` visits the images in an order
/// drawn from the run seed and the epoch, so a resumed run sees what the uninterrupted one would.
pub(crate) fn training_batch(
    data: &crate::data::ImageDataset,
    seed: u64,
    step: u64,
    batch_size: i64,
) -> Result<(Tensor, Tensor)> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let n = data.len();
    let per_epoch = n.div_ceil(batch_size as usize).max(1) as u64;
    let (epoch, index) = (step / per_epoch, (step % per_epoch) as usize);
    let mut order: Vec<i64> = (0..n as i64).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(derived_seed(
        seed,
        DATA_STREAM,
        epoch,
    )));
    let start = index * batch_size as usize;
    let chosen = &order[start..(start + batch_size as usize).min(n)];
    let idx = Tensor::from_slice(chosen);
    Ok((
        data.images.index_select(0, &idx),
        data.labels.index_select(0, &idx),
    ))
}

/// Draws `curves.png` from a run's `metrics.jsonl`: training loss and every `test_*` metric
/// against the step.
pub(crate) fn write_curves(out_dir: &Path, title: &str) -> Result<()> {
    let text = std::fs::read_to_string(out_dir.join(train::METRICS_FILE)).unwrap_or_default();
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for record in text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        let Some(step) = record.get("step").and_then(|s| s.as_f64()) else {
            continue;
        };
        if let Some(fields) = record.as_object() {
            for (k, v) in fields {
                if k == "loss" || k.starts_with("test_") {
                    if let Some(v) = v.as_f64() {
                        series.entry(k.clone()).or_default().push((step, v));
                    }
                }
            }
        }
    }
    let series: Vec<crate::plots::Series> = series
        .into_iter()
        .map(|(name, points)| crate::plots::Series { name, points })
        .collect();
    if series.is_empty() {
        return Ok(());
    }
    crate::plots::save_curves(title, "step", "value", &series, &out_dir.join("curves.png"))
}

/// The parameter store of the model a configuration describes (e.g. to list optimiser groups).
pub fn model_store(config: &RunConfig, device: Device) -> Result<VarStore> {
    Ok(match config.task {
        Task::ToyDensity => crate::models::VectorFlow::new(config.vector_model()?, 2, device)?.vs,
        Task::ImageDensity => image_density::build(config, device)?.0,
        Task::Classifier => classifier::build(config, device)?.0,
    })
}

/// Relative tolerance of the singular-value iterations run before evaluation.
const EVAL_POWER_TOL: f64 = 1e-10;
/// Most singular-value iterations per layer before evaluation.
const EVAL_POWER_MAX_ITER: usize = 5000;

/// Makes every layer's spectral-norm estimate exact before evaluation (SVD for dense and 1x1 maps,
/// subspace iteration to convergence for kxk convs: [`crate::nn::SpectralLinear::certify`]), so that the normalised weights use the true
/// spectral norms (training runs only a few iterations per step, so the stored vectors lag the
/// weights slightly) and `Lip(g) <= c^L` holds.
pub(crate) fn refine_for_evaluation(nets: &[&crate::nn::ResidualNet]) {
    for g in nets {
        g.certify_spectral_norms(EVAL_POWER_TOL, EVAL_POWER_MAX_ITER);
    }
}
