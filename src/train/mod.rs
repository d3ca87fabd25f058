//! The training loop, shared by every trainer: it knows an [`Objective`], not a model.
//!
//! Each step: loss -> backward -> optimiser step (with its groups and gradient transforms). The loop
//! shows a progress bar, appends metrics to `metrics.jsonl`, checkpoints every N steps and at the
//! end (atomically), stops with a clear error on a non-finite loss while keeping the last good
//! checkpoint, and on Ctrl-C saves a checkpoint before returning.

pub mod ema;

pub use ema::{Ema, Weights};

use crate::checkpoint::{self, CheckpointMeta};
use crate::optim::Optimizer;
use crate::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tch::{nn::VarStore, Tensor};

/// The file name of a run's checkpoint inside its folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// The file name of the best checkpoint (lowest evaluation score) inside a run folder.
pub const BEST_CHECKPOINT_FILE: &str = "best.safetensors";
/// The file name of a run's metrics log inside its folder.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// The result of a periodic evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Metrics to log (e.g. `test_bits_per_dim`).
    pub metrics: Vec<(String, f64)>,
    /// The score to minimise: the best one so far is kept as `best.safetensors`.
    pub score: f64,
}

/// What a trainer optimises.
pub trait Objective {
    /// The loss of training step `step` (0-based) and extra scalars to log with it. Randomness
    /// should be derived from `step`, so a resumed run draws what the uninterrupted one would.
    fn loss(&mut self, step: u64) -> Result<(Tensor, Vec<(String, f64)>)>;
    /// Called after every optimiser step (e.g. to update a moving average of the weights).
    fn after_step(&mut self, _step: u64) -> Result<()> {
        Ok(())
    }
    /// A test-set evaluation after `step` steps (called every `eval_every` steps and at the end).
    fn evaluate(&mut self, _step: u64) -> Result<Option<Evaluation>> {
        Ok(None)
    }
    /// Extra tensors to keep in checkpoints (e.g. the moving average of the weights).
    fn extra_state(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

/// Settings of one run of the loop.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    pub steps: u64,
    pub checkpoint_every: u64,
    pub log_every: u64,
    pub out_dir: PathBuf,
    /// The run's configuration, stored in every checkpoint.
    pub config_toml: String,
    /// Whether to log per-group gradient norms.
    pub log_grad_stats: bool,
    /// Evaluate every this many steps (and at the end); `None`: never.
    pub eval_every: Option<u64>,
    /// Wall-clock budget of this invocation: once spent, the loop ends after the current step as
    /// if it were the last (final evaluation and checkpoint). `None`: no limit.
    pub time_budget: Option<std::time::Duration>,
}

/// How the loop ended.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopOutcome {
    pub last_step: u64,
    pub interrupted: bool,
    /// The loop ended before `steps` because [`LoopSettings::time_budget`] was spent.
    pub out_of_time: bool,
    pub final_loss: f64,
    pub seconds: f64,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn install_interrupt_handler() {
    // A second installation fails harmlessly; the first handler stays.
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
}

/// Saves the model variables, optimiser state and the objective's extra state after `step` steps
/// into `file` inside the run folder.
pub fn save_checkpoint(
    vs: &VarStore,
    optimizer: &Optimizer,
    extra: Vec<(String, Tensor)>,
    settings: &LoopSettings,
    step: u64,
    file: &str,
) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    tensors.extend(optimizer.state_tensors());
    tensors.extend(extra);
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let meta = CheckpointMeta {
        step,
        config_toml: settings.config_toml.clone(),
    };
    checkpoint::save(&settings.out_dir.join(file), &tensors, &meta)
}

/// Restores model and optimiser from `dir`'s checkpoint; returns the step it was taken at and all
/// its tensors (for extra state), and drops metrics lines written after it.
pub fn resume(
    vs: &VarStore,
    optimizer: &mut Optimizer,
    dir: &Path,
) -> Result<(u64, std::collections::BTreeMap<String, Tensor>)> {
    let path = dir.join(CHECKPOINT_FILE);
    let (tensors, meta) = checkpoint::load(&path)?;
    checkpoint::restore_vars(vs, &tensors, &path)?;
    let optim_state = tensors
        .iter()
        .filter(|(k, _)| k.starts_with("optim."))
        .map(|(k, v)| (k.clone(), v.shallow_clone()))
        .collect();
    optimizer.load_state_tensors(&optim_state)?;
    truncate_metrics(&dir.join(METRICS_FILE), meta.step)?;
    Ok((meta.step, tensors))
}

/// Keeps only the metrics lines whose step is at most `step`.
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    checkpoint::write_atomically(path, kept.as_bytes())
}

fn append_metrics(path: &Path, record: &serde_json::Value) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::file(path, e.to_string()))?;
    writeln!(file, "{record}").map_err(|e| Error::file(path, e.to_string()))
}

fn progress_bar(total: u64, start: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_position(start);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} ({eta}) {msg}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// The best evaluation score logged so far in a run folder (for resumed runs).
fn previous_best(dir: &Path) -> f64 {
    let Ok(text) = std::fs::read_to_string(dir.join(METRICS_FILE)) else {
        return f64::INFINITY;
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get(SCORE_KEY).and_then(|s| s.as_f64()))
        .fold(f64::INFINITY, f64::min)
}

/// The metrics key under which the evaluation score is logged.
pub const SCORE_KEY: &str = "eval_score";

/// Runs steps `start_step..settings.steps` of `objective`.
pub fn run(
    vs: &VarStore,
    optimizer: &mut Optimizer,
    objective: &mut dyn Objective,
    settings: &LoopSettings,
    start_step: u64,
) -> Result<LoopOutcome> {
    install_interrupt_handler();
    INTERRUPTED.store(false, Ordering::SeqCst);
    std::fs::create_dir_all(&settings.out_dir)
        .map_err(|e| Error::file(&settings.out_dir, e.to_string()))?;
    let metrics_path = settings.out_dir.join(METRICS_FILE);
    let bar = progress_bar(settings.steps, start_step);
    let started = Instant::now();
    let mut final_loss = f64::NAN;
    let mut last_saved = start_step;
    let mut best_score = previous_best(&settings.out_dir);
    for step in start_step..settings.steps {
        optimizer.zero_grad();
        let (loss, extras) = objective.loss(step)?;
        let value = loss.double_value(&[]);
        if !value.is_finite() {
            bar.abandon();
            return Err(Error::NonFinite(format!(
                "the loss became {value} at step {step}; training stopped and the last good checkpoint \
                 (step {last_saved}) in {} was kept. Try a lower optim.lr, a smaller model.spectral.coeff \
                 or gradient clipping (optim.global_clip_norm).",
                settings.out_dir.display()
            )));
        }
        loss.backward();
        let report = optimizer.step()?;
        objective.after_step(step)?;
        final_loss = value;
        let done = step + 1;
        let out_of_time = settings
            .time_budget
            .is_some_and(|budget| started.elapsed() >= budget);
        let last = done == settings.steps || out_of_time;
        let evaluation = match settings.eval_every {
            Some(every) if done % every == 0 || last => objective.evaluate(done)?,
            _ => None,
        };
        if let Some(eval) = &evaluation {
            if eval.score < best_score {
                best_score = eval.score;
                let extra = objective.extra_state();
                save_checkpoint(vs, optimizer, extra, settings, done, BEST_CHECKPOINT_FILE)?;
            }
        }
        if done % settings.log_every == 0 || last || evaluation.is_some() {
            let mut record = serde_json::json!({
                "step": done, "loss": value, "lr": report.lr,
                "time_s": started.elapsed().as_secs_f64(),
            });
            if let Some(eval) = &evaluation {
                record[SCORE_KEY] = serde_json::json!(eval.score);
                for (k, v) in &eval.metrics {
                    record[k.as_str()] = serde_json::json!(v);
                }
            }
            for (k, v) in &extras {
                record[k.as_str()] = serde_json::json!(v);
            }
            if settings.log_grad_stats {
                record["grad_norm"] = serde_json::json!(report.global_grad_norm);
                for (group, norm) in &report.group_grad_norms {
                    record[format!("grad_norm/{group}")] = serde_json::json!(norm);
                }
            }
            append_metrics(&metrics_path, &record)?;
            bar.set_message(format!("loss {value:.4}"));
        }
        bar.inc(1);
        let interrupted = INTERRUPTED.load(Ordering::SeqCst);
        if done % settings.checkpoint_every == 0 || last || interrupted {
            save_checkpoint(
                vs,
                optimizer,
                objective.extra_state(),
                settings,
                done,
                CHECKPOINT_FILE,
            )?;
            last_saved = done;
        }
        if interrupted || out_of_time {
            bar.abandon_with_message(if interrupted {
                format!("interrupted; checkpoint saved at step {done}")
            } else {
                format!(
                    "time budget spent; stopped at step {done} of {} (checkpoint saved)",
                    settings.steps
                )
            });
            return Ok(LoopOutcome {
                last_step: done,
                interrupted,
                out_of_time: !interrupted,
                final_loss,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
    }
    bar.finish();
    Ok(LoopOutcome {
        last_step: settings.steps,
        interrupted: false,
        out_of_time: false,
        final_loss,
        seconds: started.elapsed().as_secs_f64(),
    })
}
