//! Training a job into a run folder (new, forced over an old run, or resumed), and opening a
//! trained run to evaluate it, sample from it or use it on new data.
//!
//! # Several processes
//!
//! With [`TrainOptions::distributed`] set (`genflow train` sets it from the environment that
//! `genflow launch`, `torchrun` and cluster launchers give each rank), the job trains
//! data-parallel ([`crate::distributed::data_parallel`]): the ranks join one group (Gloo on the
//! CPU, NCCL on CUDA devices, where rank `r` uses `cuda:LOCAL_RANK`), refuse to start unless every
//! rank has the same configuration (and, when resuming, the same checkpoint), start from rank 0's
//! weights, and train with `train.batch_size` as the global batch, which the ranks split; the
//! learning rate is not scaled, since the averaged gradient is that of the global batch. Only
//! rank 0 writes the run folder (configuration, metrics, checkpoints, pictures). A resumed run
//! may have any number of ranks: every rank reads the checkpoint, so every machine needs the run
//! folder (a shared file system, or a copy).

use super::{
    certify_for_evaluation, lipschitz_max, DataKind, FittedCodes, ItemConvergence, JobConfig,
    LogProb, SampleOptions, Task,
};
use crate::config::{ConfigDocument, Dtype};
use crate::distributed::{Backend, DataParallel, GroupConfig, ProcessGroup};
use crate::optim::Optimizer;
use crate::train::checkpoint::{self, CheckpointMeta};
use crate::train::run_dir::EVAL_FILE;
use crate::train::{self, run_dir, Averaged, LoopOutcome, LoopSettings, Weights, CHECKPOINT_FILE};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use tch::{Device, Tensor};

/// Where and how a job trains.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Start over in a folder that holds a run, removing what that run wrote.
    pub force: bool,
    /// The device; `None`: the job's `device` setting, else CUDA when present.
    pub device: Option<Device>,
    /// Train data-parallel as one rank of this group (see [`crate::distributed::data_parallel`]); `None`: one
    /// process. `genflow train` takes it from the environment
    /// ([`GroupConfig::from_env_if_set`]).
    pub distributed: Option<GroupConfig>,
}

/// Keys a resumed or evaluated run may change without becoming another run (dotted prefixes).
const RESUME_MAY_CHANGE: &[&str] = &[
    "device",
    "train.max_minutes",
    "train.checkpoint_every",
    "train.log_every",
    "data.dir",
];
/// Keys an evaluation may change besides those.
const EVAL_MAY_CHANGE: &[&str] = &["eval", "data.test_size"];

/// Trains `job` from scratch into `out_dir`. A folder that already holds a run is refused unless
/// `options.force` ([`run_dir::prepare_new`]).
pub fn train(job: &JobConfig, out_dir: &Path, options: &TrainOptions) -> Result<LoopOutcome> {
    let device = device_of(job, options)?;
    let dp = join(job, device, options, None)?;
    on_main(dp.as_deref(), || run_dir::check_new(out_dir, options.force))?;
    run_training(job, out_dir, None, device, dp, options.force)
}

/// Runs `f` on rank 0 of a data-parallel run (or on the only process), and gives every rank its
/// outcome, so that they go on, or stop, together.
fn on_main(dp: Option<&DataParallel>, f: impl FnOnce() -> Result<()>) -> Result<()> {
    match dp {
        Some(dp) => dp.from_main(|| f().map(|()| Vec::new())).map(|_| ()),
        None => f(),
    }
}

/// Joins the data-parallel group of `options` (none: `Ok(None)`) with the backend of `device`,
/// and refuses to go on unless every rank has the same configuration (and the same checkpoint
/// bytes, `resumed`).
fn join(
    job: &JobConfig,
    device: Device,
    options: &TrainOptions,
    resumed: Option<&[u8]>,
) -> Result<Option<Rc<DataParallel>>> {
    let Some(cfg) = &options.distributed else {
        return Ok(None);
    };
    if let Some(why) = job.task.single_process_only() {
        // before joining the group: every rank refuses at once, none waits for the others
        return Err(Error::config(format!(
            "task {} trains on one process only{}; train it with `genflow train`, without \
             `genflow launch` or torchrun",
            job.task.name(),
            if why.is_empty() {
                String::new()
            } else {
                format!(" {why}")
            }
        )));
    }
    let mut cfg = cfg.clone();
    cfg.backend = Backend::for_device(device);
    let dp = DataParallel::new(ProcessGroup::with_config(&cfg)?);
    dp.check_same("configuration", job.to_toml()?.as_bytes())?;
    if let Some(bytes) = resumed {
        dp.check_same("checkpoint", bytes)?;
    }
    Ok(Some(dp))
}

/// Continues the run in `out_dir` from its checkpoint. The job is the run's own configuration
/// with `overrides` applied, or `job` when given; either may differ from the run's only in keys
/// that do not change what is computed (the time budget, logging and checkpoint cadence, the
/// device, the data folder). A finished run is refused.
pub fn resume(
    out_dir: &Path,
    job: Option<&JobConfig>,
    overrides: &[String],
    options: &TrainOptions,
) -> Result<LoopOutcome> {
    let path = out_dir.join(CHECKPOINT_FILE);
    if !path.exists() {
        return Err(Error::file(
            out_dir,
            "holds no checkpoint to resume; start a new run without --resume",
        ));
    }
    let (tensors, meta) = checkpoint::load(&path)?;
    let stored = JobConfig::from_checkpoint(&meta, &path.display().to_string())?;
    let job = match job {
        Some(job) => job.clone(),
        None => with_overrides(&stored, &path, overrides)?,
    };
    let mut may_change = RESUME_MAY_CHANGE.to_vec();
    if lengthens(&stored, &job)? {
        may_change.extend(["train.steps", "train.epochs"]);
    }
    check_same_run(&stored, &job, &may_change, "--resume")?;
    let device = device_of(&job, options)?;
    let dp = match options.distributed {
        Some(_) => {
            let bytes = std::fs::read(&path).map_err(|e| Error::file(&path, e.to_string()))?;
            join(&job, device, options, Some(&bytes))?
        }
        None => None,
    };
    run_training(
        &job,
        out_dir,
        Some((tensors, meta, path)),
        device,
        dp,
        false,
    )
}

/// Whether `job` trains the `stored` run for longer (more steps or epochs, nothing else about
/// its length changed); refused when the learning-rate schedule follows the run's length, since
/// the steps already taken followed the shorter schedule.
fn lengthens(stored: &JobConfig, job: &JobConfig) -> Result<bool> {
    let (was, now) = (&stored.run.train, &job.run.train);
    let longer = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => b >= a,
        (a, b) => a == b,
    };
    let changed = was.steps != now.steps || was.epochs != now.epochs;
    if !changed || !longer(was.steps, now.steps) || !longer(was.epochs, now.epochs) {
        return Ok(false);
    }
    if job.run.optim.schedule.follows_run_length() {
        return Err(Error::config(
            "--resume: a longer run would change the learning-rate schedule, which follows the \
             run's length (the steps taken so far decayed over the shorter one); start a new run, \
             or set optim.schedule.total_steps explicitly in runs you mean to extend",
        ));
    }
    Ok(true)
}

/// `job`'s stored document with `overrides` applied.
fn with_overrides(stored: &JobConfig, path: &Path, overrides: &[String]) -> Result<JobConfig> {
    if overrides.is_empty() {
        return Ok(stored.clone());
    }
    let doc = ConfigDocument::parse(&path.display().to_string(), &stored.to_toml()?)?
        .with_overrides(overrides)?;
    JobConfig::from_document(&doc)
}

/// The device of a job: the option, else the job's setting, else CUDA when present; a rank of a
/// data-parallel run on CUDA uses `cuda:LOCAL_RANK`.
fn device_of(job: &JobConfig, options: &TrainOptions) -> Result<Device> {
    let device = match options.device {
        Some(d) => d,
        None => crate::device::select(job.run.device.as_deref().unwrap_or("auto"))?,
    };
    match (&options.distributed, device) {
        (Some(cfg), Device::Cuda(_)) => crate::device::select(&format!("cuda:{}", cfg.local_rank)),
        _ => Ok(device),
    }
}

/// The job's task built on `device` from the run's seed, in the run's floating-point type.
fn build_task(job: &JobConfig, device: Device) -> Result<Box<dyn Task>> {
    tch::manual_seed(job.run.seed as i64);
    let task = job.task.build(&job.run, device)?;
    if job.run.dtype == Dtype::Float64 {
        task.vars().root().double();
    }
    Ok(task)
}

type Stored = (BTreeMap<String, Tensor>, CheckpointMeta, PathBuf);

fn run_training(
    job: &JobConfig,
    out_dir: &Path,
    stored: Option<Stored>,
    device: Device,
    dp: Option<Rc<DataParallel>>,
    force: bool,
) -> Result<LoopOutcome> {
    // Also without a group: a training inside another (a feature network for the metrics) runs
    // as one process.
    let active = crate::distributed::data_parallel::activate(dp.clone());
    let main = crate::train::is_main();
    let task = build_task(job, device)?;
    let vs = task.vars();
    let training = task.training(&job.run)?;
    let plan = training.plan;
    let mut optimizer = Optimizer::new(vs, &job.run.optim.for_run(plan.steps))?;
    let start = match &stored {
        Some((tensors, meta, path)) => {
            if meta.step >= plan.steps {
                return Err(Error::file(
                    out_dir,
                    format!(
                        "the run already finished all {} steps; nothing to resume (start a new run \
                         to train longer)",
                        plan.steps
                    ),
                ));
            }
            train::resume(vs, &mut optimizer, tensors, path, meta.step)?;
            meta.step
        }
        None => 0,
    };
    if stored.is_none() {
        // only now that the model and its data are ready: a failing configuration leaves the
        // folder (and, with --force, the old run) as it was
        on_main(dp.as_deref(), || {
            run_dir::prepare_new(out_dir, force, job.task.outputs())
        })?;
    }
    let config_toml = job.to_toml()?;
    if main {
        crate::fs::write_atomic(&out_dir.join(run_dir::CONFIG_FILE), config_toml.as_bytes())?;
        tracing::info!(
            "training {} for {} steps (from step {start}) into {} on {device:?}",
            job.task.name(),
            plan.steps,
            out_dir.display()
        );
    }
    if let Some(dp) = &dp {
        dp.broadcast_store(vs)?;
        if main {
            let ranks = dp.world_size() as i64;
            let batch = job.run.train.batch_size;
            tracing::info!(
                "data-parallel on {ranks} ranks ({}): global batch {batch} (about {} per rank), \
                 learning rate {} as for one process with batch {batch} (the ranks average their \
                 gradients)",
                dp.group().backend().name(),
                batch / ranks,
                job.run.optim.lr
            );
        }
    }
    let settings = LoopSettings {
        steps: plan.steps,
        checkpoint_every: job.run.train.checkpoint_every,
        log_every: job.run.train.log_every,
        out_dir: out_dir.to_path_buf(),
        config_toml,
        log_grad_stats: job.run.optim.log_grad_stats,
        eval_every: plan.eval_every,
        time_budget: job
            .run
            .train
            .max_minutes
            .map(|m| std::time::Duration::from_secs_f64(m * 60.0)),
        on_nan: job.run.train.on_nan,
        max_rollbacks: job.run.train.max_rollbacks,
    };
    let mut objective = training.objective;
    let comm_before = dp.as_ref().map(|dp| dp.communication_time());
    let outcome = match job.run.train.ema_decay {
        Some(decay) => {
            let resumed = stored.as_ref().map(|(tensors, _, _)| tensors);
            let keep = |name: &str| task.averaged(name);
            let mut averaged = Averaged::new(objective, vs, decay, &keep, resumed)?;
            let outcome = train::run(vs, &mut optimizer, &mut averaged, &settings, start)?;
            averaged.into_averaged_weights();
            outcome
        }
        None => train::run(vs, &mut optimizer, &mut objective, &settings, start)?,
    };
    if let (Some(dp), Some(before)) = (&dp, comm_before) {
        if main {
            let comm = (dp.communication_time() - before).as_secs_f64();
            tracing::info!(
                "communication: {comm:.1} s of {:.1} s of training ({:.1}%)",
                outcome.seconds,
                100.0 * comm / outcome.seconds.max(1e-9)
            );
        }
    }
    drop(active);
    if main && !outcome.interrupted {
        task.write_pictures(&job.run, out_dir)?;
        crate::report::write_run_report(out_dir)?;
    }
    Ok(outcome)
}

/// Refuses `job` when it differs from the run's `stored` configuration outside `may_change`,
/// naming the first key that differs.
fn check_same_run(
    stored: &JobConfig,
    job: &JobConfig,
    may_change: &[&str],
    what: &str,
) -> Result<()> {
    let parse = |j: &JobConfig| -> Result<toml::Table> {
        toml::from_str(&j.to_toml()?).map_err(|e| Error::config(e.to_string()))
    };
    match first_difference(&parse(stored)?, &parse(job)?, "", may_change) {
        None => Ok(()),
        Some((key, was, now)) => Err(Error::config(format!(
            "{what}: the configuration differs from the run's at {key} (run: {was}, now: {now}); \
             continue with the run's own configuration, or start a new run in another folder"
        ))),
    }
}

/// The first dotted key (outside `may_change`) whose values differ, with both values.
fn first_difference(
    a: &toml::Table,
    b: &toml::Table,
    prefix: &str,
    may_change: &[&str],
) -> Option<(String, String, String)> {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for key in keys {
        let dotted = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if may_change
            .iter()
            .any(|m| dotted == *m || dotted.starts_with(&format!("{m}.")))
        {
            continue;
        }
        match (a.get(key), b.get(key)) {
            (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) => {
                if let Some(d) = first_difference(x, y, &dotted, may_change) {
                    return Some(d);
                }
            }
            (x, y) if x != y => {
                let show =
                    |v: Option<&toml::Value>| v.map_or("unset".to_string(), |v| v.to_string());
                return Some((dotted, show(x), show(y)));
            }
            _ => {}
        }
    }
    None
}

/// A trained run, opened once: its configuration, the model with the checkpoint's weights
/// (certified for evaluation), and the step it was saved at.
pub struct Run {
    pub dir: PathBuf,
    pub job: JobConfig,
    /// Optimiser steps taken when the checkpoint was written.
    pub step: u64,
    task: Box<dyn Task>,
    device: Device,
}

impl Run {
    /// Opens the run in `dir` on `device` with its averaged weights when it kept them (or the live
    /// ones: `weights`).
    pub fn open(dir: &Path, device: Device, weights: Weights) -> Result<Self> {
        Self::open_with(dir, device, weights, &[])
    }

    /// [`Run::open`] with `overrides` of the evaluation settings, the test-set size or the data
    /// folder (`eval.*`, `data.test_size`, `data.dir`); other keys would make another model and
    /// are refused.
    pub fn open_with(
        dir: &Path,
        device: Device,
        weights: Weights,
        overrides: &[String],
    ) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::file(
                dir,
                "run folder not found (train one with `genflow train --out DIR`)",
            ));
        }
        let path = dir.join(CHECKPOINT_FILE);
        let (tensors, meta) = checkpoint::load(&path)?;
        let stored = JobConfig::from_checkpoint(&meta, &path.display().to_string())?;
        let job = with_overrides(&stored, &path, overrides)?;
        let may_change: Vec<&str> = RESUME_MAY_CHANGE
            .iter()
            .chain(EVAL_MAY_CHANGE)
            .copied()
            .collect();
        check_same_run(&stored, &job, &may_change, "--set")?;
        let task = build_task(&job, device)?;
        checkpoint::restore_vars(task.vars(), &tensors, &path)?;
        crate::train::Ema::load_into_weights(task.vars(), &tensors, weights);
        certify_for_evaluation(&task.residual_nets());
        Ok(Run {
            dir: dir.to_path_buf(),
            job,
            step: meta.step,
            task,
            device,
        })
    }

    /// Warns when a residual block of the loaded model has `Lip(g) >= 1` (its inverse and
    /// samples are then not guaranteed); returns the largest bound.
    pub fn check_lipschitz(&self) -> Result<f64> {
        let lip = lipschitz_max(&self.task.residual_nets())?;
        if (lip.is_nan() || lip >= 1.0) && !self.task.residual_nets().is_empty() {
            tracing::warn!(
                "a residual block of {} has Lip(g) = {lip:.6} >= 1: its inverse and samples are not \
                 guaranteed",
                self.dir.display()
            );
        }
        Ok(lip)
    }

    /// The device the model runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The task behind the run.
    pub fn task(&self) -> &dyn Task {
        self.task.as_ref()
    }

    /// The data the model reads and writes.
    pub fn data_kind(&self) -> DataKind {
        self.task.data_kind()
    }

    /// The task's evaluation report (`genflow eval --json`), without sample-quality metrics.
    pub fn evaluate(&self) -> Result<serde_json::Value> {
        self.task.evaluate(&self.job.run)
    }

    /// Writes `report` into the run folder as [`EVAL_FILE`] (read by the report page).
    pub fn save_evaluation(&self, report: &serde_json::Value) -> Result<()> {
        let text =
            serde_json::to_string_pretty(report).map_err(|e| Error::config(e.to_string()))?;
        crate::fs::write_atomic(&self.dir.join(EVAL_FILE), text.as_bytes())
    }

    /// `n` samples in data space (`genflow sample`; `None`: the task's default count) from `seed`
    /// (default: the run's) at `temperature` (default: the run's `eval.temperature`).
    pub fn sample(
        &self,
        n: Option<i64>,
        seed: Option<u64>,
        temperature: Option<f64>,
    ) -> Result<Tensor> {
        let n = n.unwrap_or_else(|| self.task.default_sample_count());
        if n < 1 {
            return Err(Error::config(format!(
                "the number of samples must be at least 1, got {n}"
            )));
        }
        crate::limits::check("the number of samples", n, crate::limits::MAX_ITEMS)?;
        if let Some(t) = temperature {
            if !(t.is_finite() && t >= 0.0) {
                return Err(Error::config(format!(
                    "the temperature must be a finite number >= 0, got {t}"
                )));
            }
        }
        let options = SampleOptions {
            n,
            seed,
            temperature,
        };
        self.task.sample(&self.job.run, &options)
    }

    /// `log p(x)` per item of data-space `x` (density models only).
    pub fn log_prob(&self, x: &Tensor) -> Result<LogProb> {
        self.task
            .density()
            .ok_or_else(|| self.cannot(&"log-prob", &"a density"))?
            .log_prob(x)
    }

    /// `z = f(x)` per item of data-space `x` (invertible models and encoders only).
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        match (self.task.invertible(), self.task.encoder()) {
            (Some(map), _) => map.encode(x),
            (None, Some(encoder)) => encoder.encode(x),
            (None, None) => Err(self.cannot(&"encode", &"an invertible map or an encoder")),
        }
    }

    /// Codes fitted to data-space `x` with the generator held fixed, and their reconstruction
    /// errors (generators without an encoder, like GLO's).
    pub fn fit_codes(&self, x: &Tensor) -> Result<FittedCodes> {
        self.task
            .code_fit()
            .ok_or_else(|| self.cannot(&"fitting codes", &"a generator with fitted codes"))?
            .fit_codes(x)
    }

    /// `x = f^{-1}(z)` in data space, with the inverse's convergence per item (an encoder's
    /// decoder is a direct map: every item converged at once).
    pub fn decode(&self, z: &Tensor) -> Result<(Tensor, Vec<ItemConvergence>)> {
        match (self.task.invertible(), self.task.encoder()) {
            (Some(map), _) => map.decode(z),
            (None, Some(encoder)) => {
                let x = encoder.decode(z)?;
                let direct = ItemConvergence {
                    iterations: 0,
                    residual: 0.0,
                    converged: true,
                };
                Ok((x, vec![direct; z.size()[0] as usize]))
            }
            (None, None) => Err(self.cannot(&"decode", &"an invertible map or an encoder")),
        }
    }

    /// The per-item shape of latents (invertible models and encoders only).
    pub fn latent_shape(&self) -> Result<Vec<i64>> {
        match (self.task.invertible(), self.task.encoder()) {
            (Some(map), _) => Ok(map.latent_shape()),
            (None, Some(encoder)) => Ok(encoder.latent_shape()),
            (None, None) => Err(self.cannot(&"encode", &"an invertible map or an encoder")),
        }
    }

    fn cannot(&self, what: &dyn std::fmt::Display, needs: &dyn std::fmt::Display) -> Error {
        Error::config(format!(
            "{what} needs {needs}; the {} model of {} is not one",
            self.job.task.name(),
            self.dir.display()
        ))
    }
}
