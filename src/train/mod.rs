//! The training loop, shared by every task: it knows an [`Objective`], not a model.
//!
//! Each step: loss -> backward -> optimiser step (with its groups and gradient transforms). The loop
//! shows a progress bar, appends metrics to `metrics.jsonl`, checkpoints every N steps and at the
//! end (atomically), stops with a clear error on a non-finite loss while keeping the last good
//! checkpoint, and on Ctrl-C saves a checkpoint before returning ([`LoopOutcome::interrupted`]; a
//! second Ctrl-C exits at once with status 130, leaving the last complete checkpoint as it was).
//!
//! Besides the loop: [`checkpoint`] (the file format), [`config`] (the shared `[train]` settings),
//! [`ema`] (a moving average of the weights) and [`run_dir`] (what a run folder holds, and
//! starting, resuming or overwriting one).

pub mod checkpoint;
pub mod config;
pub mod ema;
pub mod run_dir;

pub use config::{OnNan, Plan, TrainConfig};
pub use ema::{Averaged, Ema, Weights};

use crate::optim::Optimizer;
use crate::{Error, Result};
use checkpoint::CheckpointMeta;
use std::collections::BTreeMap;
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

/// What one training step did: the loss, extra scalars to log, and the optimiser's report.
#[derive(Debug)]
pub struct Update {
    pub loss: f64,
    pub metrics: Vec<(String, f64)>,
    pub report: crate::optim::StepReport,
}

/// What a trainer optimises.
pub trait Objective {
    /// The loss of training step `step` (0-based) and extra scalars to log with it. Randomness
    /// should be derived from `step`, so a resumed run draws what the uninterrupted one would.
    fn loss(&mut self, step: u64) -> Result<(Tensor, Vec<(String, f64)>)>;
    /// One optimiser update at step `step`. The default takes [`Objective::loss`], refuses a
    /// non-finite value ([`Error::NonFinite`], before any weight changes), backpropagates it and
    /// steps the optimiser; objectives with several losses per step override it.
    fn update(&mut self, step: u64, optimizer: &mut Optimizer) -> Result<Update> {
        loss_update(self, step, optimizer)
    }
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
    /// Restores what [`Objective::extra_state`] saved, from a checkpoint's tensors (a rollback
    /// after a non-finite step).
    fn restore(&mut self, _tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        Ok(())
    }
}

/// The default [`Objective::update`], for overrides that use it in some cases: takes
/// [`Objective::loss`] and [`descend`]s.
pub fn loss_update<O: Objective + ?Sized>(
    objective: &mut O,
    step: u64,
    optimizer: &mut Optimizer,
) -> Result<Update> {
    optimizer.zero_grad();
    let (loss, metrics) = objective.loss(step)?;
    descend(optimizer, &loss, metrics)
}

/// The end of the default [`Objective::update`], for objectives that override it: refuses a
/// non-finite `loss` ([`Error::NonFinite`], before any weight changes), backpropagates it and
/// steps `optimizer` (whose gradients the caller zeroed before computing `loss`).
pub fn descend(
    optimizer: &mut Optimizer,
    loss: &Tensor,
    metrics: Vec<(String, f64)>,
) -> Result<Update> {
    let value = loss.double_value(&[]);
    if !value.is_finite() {
        return Err(Error::NonFinite(format!("the loss became {value}")));
    }
    loss.f_backward()?;
    let report = optimizer.step()?;
    Ok(Update {
        loss: value,
        metrics,
        report,
    })
}

impl<O: Objective + ?Sized> Objective for Box<O> {
    fn loss(&mut self, step: u64) -> Result<(Tensor, Vec<(String, f64)>)> {
        (**self).loss(step)
    }
    fn update(&mut self, step: u64, optimizer: &mut Optimizer) -> Result<Update> {
        (**self).update(step, optimizer)
    }
    fn after_step(&mut self, step: u64) -> Result<()> {
        (**self).after_step(step)
    }
    fn evaluate(&mut self, step: u64) -> Result<Option<Evaluation>> {
        (**self).evaluate(step)
    }
    fn extra_state(&self) -> Vec<(String, Tensor)> {
        (**self).extra_state()
    }
    fn restore(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        (**self).restore(tensors)
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
    /// What a non-finite loss or gradient does: stop the run, or roll back to the last checkpoint.
    pub on_nan: OnNan,
    /// Rollbacks a run may take before it stops.
    pub max_rollbacks: u32,
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

/// The exit status of a process ended by Ctrl-C (128 + SIGINT), as shells report it.
pub const EXIT_INTERRUPTED: i32 = 130;

/// Ctrl-C asks the loop to stop after the current step (with a checkpoint); a second Ctrl-C exits
/// at once with [`EXIT_INTERRUPTED`]. Checkpoints are written atomically, so exiting in the middle
/// of a write leaves the last complete checkpoint as it was.
fn install_interrupt_handler() {
    // A second installation fails harmlessly; the first handler stays.
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted twice: exiting without a new checkpoint");
            std::process::exit(EXIT_INTERRUPTED);
        }
        eprintln!("\ninterrupted: saving a checkpoint after this step (Ctrl-C again to quit now)");
    });
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
    let meta = CheckpointMeta::new(step, settings.config_toml.clone());
    checkpoint::save(&settings.out_dir.join(file), &tensors, &meta)
}

/// Restores model and optimiser from a checkpoint of the run in `dir` (its `tensors`, loaded from
/// `path`, taken after `step` steps), and drops the metrics lines written after it.
pub fn resume(
    vs: &VarStore,
    optimizer: &mut Optimizer,
    tensors: &BTreeMap<String, Tensor>,
    path: &Path,
    step: u64,
) -> Result<()> {
    checkpoint::restore_vars(vs, tensors, path)?;
    let optim_state = tensors
        .iter()
        .filter(|(k, _)| k.starts_with("optim."))
        .map(|(k, v)| (k.clone(), v.shallow_clone()))
        .collect();
    optimizer.load_state_tensors(&optim_state)?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    truncate_metrics(&dir.join(METRICS_FILE), step)
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
    crate::fs::write_atomic(path, kept.as_bytes())
}

fn append_metrics(path: &Path, record: &serde_json::Value) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::file(path, e.to_string()))?;
    writeln!(file, "{record}").map_err(|e| Error::file(path, e.to_string()))
}

/// The message of a run stopped by a non-finite loss or gradient (`what`) in the update after
/// `step` steps, with the newest checkpoint on disk (`last_saved` steps, if any).
fn non_finite_stop(
    what: &str,
    step: u64,
    last_saved: Option<u64>,
    settings: &LoopSettings,
    rollbacks: u32,
) -> String {
    let kept = match last_saved {
        Some(saved) => format!(
            "the last good checkpoint (step {saved}) in {} was kept",
            settings.out_dir.display()
        ),
        None => format!(
            "no checkpoint had been written yet (train.checkpoint_every = {})",
            settings.checkpoint_every
        ),
    };
    let retries = match settings.on_nan {
        OnNan::Rollback => format!(" after {rollbacks} rollbacks (train.max_rollbacks)"),
        OnNan::Stop => String::new(),
    };
    format!(
        "{what} in the update after step {step}; training stopped{retries} and {kept}. Try a lower \
         optim.lr, a smaller model.spectral.coeff, gradient clipping (optim.global_clip_norm), or \
         train.on_nan = \"rollback\""
    )
}

/// Rolls a run back to its newest checkpoint (`saved` steps) after the update after `failed`
/// steps went non-finite (`what`): reloads the weights, the optimiser state and the objective's
/// state, halves the learning rate from then on, drops the metrics logged after the checkpoint and
/// logs the rollback (the caller skips the failed batch).
fn roll_back(
    vs: &VarStore,
    optimizer: &mut Optimizer,
    objective: &mut dyn Objective,
    settings: &LoopSettings,
    (failed, saved): (u64, u64),
    rollbacks: u32,
    what: &str,
) -> Result<()> {
    let path = settings.out_dir.join(CHECKPOINT_FILE);
    let (tensors, meta) = checkpoint::load(&path)?;
    resume(vs, optimizer, &tensors, &path, meta.step)?;
    objective.restore(&tensors)?;
    optimizer.scale_lr(0.5);
    let record = serde_json::json!({
        "step": saved, "event": "rollback", "failed_step": failed + 1, "rollback": rollbacks,
        "lr_scale": optimizer.lr_scale(), "reason": what,
    });
    append_metrics(&settings.out_dir.join(METRICS_FILE), &record)?;
    tracing::warn!(
        "{what} in the update after step {failed}: rolled back to the checkpoint at step {saved} \
         (rollback {rollbacks} of at most {}), learning rate halved, that batch skipped",
        settings.max_rollbacks
    );
    Ok(())
}

/// One line of `metrics.jsonl`: the step's loss and learning rate, the evaluation when there was
/// one, the objective's extra scalars, gradient norms when asked for, and `event` when the run
/// ends early (`interrupted`, `time_budget_spent`).
fn metrics_record(
    done: u64,
    update: &Update,
    evaluation: Option<&Evaluation>,
    event: Option<&str>,
    settings: &LoopSettings,
    started: Instant,
) -> serde_json::Value {
    let mut record = serde_json::json!({
        "step": done, "loss": update.loss, "lr": update.report.lr,
        "time_s": started.elapsed().as_secs_f64(),
    });
    if let Some(eval) = evaluation {
        record[SCORE_KEY] = serde_json::json!(eval.score);
        for (k, v) in &eval.metrics {
            record[k.as_str()] = serde_json::json!(v);
        }
    }
    for (k, v) in &update.metrics {
        record[k.as_str()] = serde_json::json!(v);
    }
    if settings.log_grad_stats {
        record["grad_norm"] = serde_json::json!(update.report.global_grad_norm);
        for (group, norm) in &update.report.group_grad_norms {
            record[format!("grad_norm/{group}")] = serde_json::json!(norm);
        }
    }
    if let Some(event) = event {
        record["event"] = serde_json::json!(event);
    }
    record
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
    let bar = crate::progress::bar(settings.steps, start_step, "train");
    let started = Instant::now();
    let mut final_loss = f64::NAN;
    // the steps of the newest checkpoint on disk (a resumed run starts from one)
    let mut last_saved = (start_step > 0).then_some(start_step);
    let mut best_score = previous_best(&settings.out_dir);
    let mut rollbacks = 0u32;
    let mut skipped = std::collections::BTreeSet::new();
    let mut step = start_step;
    while step < settings.steps {
        if skipped.contains(&step) {
            // the batch of a step that went non-finite before a rollback
            bar.inc(1);
            step += 1;
            continue;
        }
        let update = match objective.update(step, optimizer) {
            Err(Error::NonFinite(what)) => {
                let can_roll_back =
                    settings.on_nan == OnNan::Rollback && rollbacks < settings.max_rollbacks;
                match (last_saved, can_roll_back) {
                    (Some(saved), true) => {
                        rollbacks += 1;
                        roll_back(
                            vs,
                            optimizer,
                            objective,
                            settings,
                            (step, saved),
                            rollbacks,
                            &what,
                        )?;
                        skipped.insert(step);
                        bar.set_position(saved);
                        step = saved;
                        continue;
                    }
                    _ => {
                        bar.abandon();
                        let why = non_finite_stop(&what, step, last_saved, settings, rollbacks);
                        return Err(Error::NonFinite(why));
                    }
                }
            }
            other => other?,
        };
        objective.after_step(step)?;
        final_loss = update.loss;
        let done = step + 1;
        let out_of_time = settings
            .time_budget
            .is_some_and(|budget| started.elapsed() >= budget);
        let interrupted = INTERRUPTED.load(Ordering::SeqCst);
        let last = done == settings.steps || out_of_time;
        let evaluation = match settings.eval_every {
            Some(every) if done.is_multiple_of(every) || last => objective.evaluate(done)?,
            _ => None,
        };
        if let Some(eval) = &evaluation {
            if eval.score < best_score {
                best_score = eval.score;
                let extra = objective.extra_state();
                save_checkpoint(vs, optimizer, extra, settings, done, BEST_CHECKPOINT_FILE)?;
            }
        }
        let event = if interrupted {
            Some("interrupted")
        } else if out_of_time && done < settings.steps {
            Some("time_budget_spent")
        } else {
            None
        };
        if done.is_multiple_of(settings.log_every)
            || last
            || evaluation.is_some()
            || event.is_some()
        {
            let record =
                metrics_record(done, &update, evaluation.as_ref(), event, settings, started);
            append_metrics(&metrics_path, &record)?;
            bar.set_message(format!("loss {:.4}", update.loss));
        }
        bar.inc(1);
        if done.is_multiple_of(settings.checkpoint_every) || last || interrupted {
            save_checkpoint(
                vs,
                optimizer,
                objective.extra_state(),
                settings,
                done,
                CHECKPOINT_FILE,
            )?;
            last_saved = Some(done);
        }
        if interrupted || out_of_time {
            let message = if interrupted {
                format!("interrupted; checkpoint saved at step {done}")
            } else {
                format!(
                    "time budget of train.max_minutes spent; stopped at step {done} of {} \
                     (checkpoint saved; --resume continues)",
                    settings.steps
                )
            };
            bar.abandon_with_message(message.clone());
            tracing::warn!("{message}");
            return Ok(LoopOutcome {
                last_step: done,
                interrupted,
                out_of_time: !interrupted && done < settings.steps,
                final_loss,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
        step = done;
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
