//! End-to-end jobs behind the CLI (train, evaluate, sample), written against the library API so that
//! they can be called from Rust too. [`train`], [`evaluate`] and [`sample`] dispatch on the run's
//! [`Task`].
pub mod classifier;
pub mod image_density;
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
pub fn train(config: &RunConfig, out_dir: &Path, resume: bool, device: Device) -> Result<LoopOutcome> {
    match config.task {
        Task::ToyDensity => toy_density::train(config, out_dir, resume, device),
        Task::ImageDensity => image_density::train(config, out_dir, resume, device),
        Task::Classifier => classifier::train(config, out_dir, resume, device),
    }
}

/// The evaluation report of a run folder (`genflow eval --json`).
pub fn evaluate(run_dir: &Path, device: Device) -> Result<serde_json::Value> {
    let (config, _, _) = load_checkpoint(run_dir)?;
    match config.task {
        Task::ToyDensity => toy_density::evaluate(run_dir, device),
        Task::ImageDensity => image_density::evaluate(run_dir, device),
        Task::Classifier => classifier::evaluate(run_dir, device),
    }
}

/// Writes `n` samples of a run to `out` (`.png`, or `.csv` for toy runs).
pub fn sample(run_dir: &Path, n: i64, out: &Path, device: Device) -> Result<()> {
    let (config, _, _) = load_checkpoint(run_dir)?;
    match config.task {
        Task::ToyDensity => toy_density::sample(run_dir, n, out, device),
        Task::ImageDensity => image_density::sample(run_dir, n, out, device),
        Task::Classifier => Err(Error::config("classifier runs have no samples; use `genflow eval`")),
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
pub fn load_checkpoint(run_dir: &Path) -> Result<(RunConfig, BTreeMap<String, Tensor>, std::path::PathBuf)> {
    if !run_dir.is_dir() {
        return Err(Error::file(run_dir, "run folder not found (train one with `genflow train --out DIR`)"));
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
    };
    checkpoint::write_atomically(&out_dir.join("config.toml"), settings.config_toml.as_bytes())?;
    Ok((optimizer, start, tensors, settings))
}
