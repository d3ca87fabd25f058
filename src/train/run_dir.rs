//! A run folder: what genflow writes into it, and how a new run treats a folder that already
//! holds one.
//!
//! A new run refuses a folder that holds a run ([`prepare_new`]): `--resume` continues that run,
//! `--force` starts over after removing everything the old run wrote, so nothing of an earlier run
//! is mixed into a new one (metrics, checkpoints, a stale `best.safetensors`, pictures). Only
//! files genflow writes are removed; anything else in the folder is left alone.

use super::{BEST_CHECKPOINT_FILE, CHECKPOINT_FILE, METRICS_FILE};
use crate::{Error, Result};
use std::path::Path;

/// The run's configuration as TOML, written when a run starts.
pub const CONFIG_FILE: &str = "config.toml";
/// The run's report page.
pub const REPORT_FILE: &str = "report.html";
/// The training curves every run draws.
pub const CURVES_FILE: &str = "curves.png";
/// The last `genflow eval` report of the run.
pub const EVAL_FILE: &str = "eval.json";

/// The files whose presence marks a folder as holding a run.
const RUN_MARKERS: [&str; 3] = [CHECKPOINT_FILE, METRICS_FILE, CONFIG_FILE];

/// Whether `dir` holds (part of) a genflow run.
pub fn holds_run(dir: &Path) -> bool {
    RUN_MARKERS.iter().any(|f| dir.join(f).exists())
}

/// Refuses `dir` for a new run when it already holds one, unless `force`.
pub fn check_new(dir: &Path, force: bool) -> Result<()> {
    if holds_run(dir) && !force {
        return Err(Error::file(
            dir,
            "already holds a run; add --resume to continue it, or --force to start over \
             (removes its checkpoints, metrics and pictures first)",
        ));
    }
    Ok(())
}

/// Makes `dir` ready for a new run. A folder that already holds a run is refused unless `force`
/// ([`check_new`]), in which case the files a run writes (checkpoints, metrics, configuration,
/// report, and the `outputs` the task writes, e.g. its pictures) are removed first. Creates the
/// folder.
pub fn prepare_new(dir: &Path, force: bool, outputs: &[&str]) -> Result<()> {
    check_new(dir, force)?;
    if holds_run(dir) {
        clear(dir, outputs)?;
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::file(dir, format!("cannot create the run folder: {e}")))
}

/// Removes every file a run writes from `dir`: the run files, `outputs`, and temporary files left
/// by an interrupted atomic write.
fn clear(dir: &Path, outputs: &[&str]) -> Result<()> {
    let fixed = [
        CHECKPOINT_FILE,
        BEST_CHECKPOINT_FILE,
        METRICS_FILE,
        CONFIG_FILE,
        REPORT_FILE,
        CURVES_FILE,
        EVAL_FILE,
    ];
    for name in fixed.iter().chain(outputs) {
        remove_if_present(&dir.join(name))?;
    }
    let entries = std::fs::read_dir(dir).map_err(|e| Error::file(dir, e.to_string()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".genflow-") && name.ends_with(".tmp") {
            remove_if_present(&entry.path())?;
        }
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::file(
            path,
            format!("cannot remove the old run's file: {e}"),
        )),
        _ => Ok(()),
    }
}
