//! Checkpoints: one safetensors file holding the model's variables under their `VarStore` names
//! (PyTorch's `safetensors.torch.load_file` reads it), the optimiser state under `optim.*`, and
//! metadata: the step, the run's TOML config, the config format and the genflow version.
//!
//! Files are written through [`crate::fs::write_atomic`], so a crash or Ctrl-C during a save never
//! leaves a corrupt checkpoint: the previous one stays until the new one is complete.

use crate::data::tensor_file;
use crate::train::ema::EMA_PREFIX;
use crate::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tch::Tensor;

/// The configuration format written by this version of genflow. Format 1 (no
/// `genflow_format` entry) is the layout before the task registry: `[image_model]` and
/// `[classifier]` tables and estimator settings every task carried.
pub const CONFIG_FORMAT: u32 = 2;

/// What a checkpoint holds besides its tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointMeta {
    /// Optimiser steps taken when it was written.
    pub step: u64,
    /// The run's configuration (TOML).
    pub config_toml: String,
    /// The format of `config_toml` ([`CONFIG_FORMAT`] for checkpoints written now).
    pub config_format: u32,
    /// The genflow version that wrote it (empty for format 1).
    pub version: String,
}

impl CheckpointMeta {
    /// Metadata of a checkpoint written now, after `step` steps of the run configured by `config_toml`.
    pub fn new(step: u64, config_toml: String) -> Self {
        CheckpointMeta {
            step,
            config_toml,
            config_format: CONFIG_FORMAT,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// Saves named tensors and metadata to `path` (safetensors, atomically).
pub fn save(path: &Path, tensors: &[(String, Tensor)], meta: &CheckpointMeta) -> Result<()> {
    let info = HashMap::from([
        ("genflow_step".to_string(), meta.step.to_string()),
        ("genflow_config".to_string(), meta.config_toml.clone()),
        ("genflow_format".to_string(), meta.config_format.to_string()),
        ("genflow_version".to_string(), meta.version.clone()),
    ]);
    tensor_file::save(path, tensors, info)
}

/// Loads every tensor of a checkpoint (on the CPU) and its metadata.
pub fn load(path: &Path) -> Result<(BTreeMap<String, Tensor>, CheckpointMeta)> {
    if !path.is_file() {
        return Err(Error::file(
            path,
            "no checkpoint here; is this a genflow run folder?",
        ));
    }
    let (tensors, info) = tensor_file::load(path).map_err(|e| match e {
        Error::File { path, msg } => Error::file(path, format!("{msg} (checkpoint)")),
        other => other,
    })?;
    let step = info
        .get("genflow_step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::file(path, "not a genflow checkpoint (no genflow_step metadata)"))?;
    let config_toml = info.get("genflow_config").cloned().unwrap_or_default();
    let config_format = match info.get("genflow_format") {
        None => 1,
        Some(f) => f
            .parse()
            .map_err(|_| Error::file(path, format!("unreadable genflow_format metadata {f:?}")))?,
    };
    if config_format > CONFIG_FORMAT {
        return Err(Error::file(
            path,
            format!(
                "written by a newer genflow (config format {config_format}, this version reads up \
                 to {CONFIG_FORMAT}); upgrade genflow to load it"
            ),
        ));
    }
    let version = info.get("genflow_version").cloned().unwrap_or_default();
    Ok((
        tensors,
        CheckpointMeta {
            step,
            config_toml,
            config_format,
            version,
        },
    ))
}

/// Copies checkpoint tensors into the variables of `vs`: every variable must be present with the
/// same shape, and every model tensor of the checkpoint (all but the optimiser's `optim.*` and the
/// moving averages' `ema.*`) must belong to the model, so that a checkpoint never silently
/// evaluates as another model than the one it holds. A mismatch names the tensor.
pub fn restore_vars(
    vs: &tch::nn::VarStore,
    tensors: &BTreeMap<String, Tensor>,
    path: &Path,
) -> Result<()> {
    let variables = vs.variables();
    let foreign = tensors.keys().find(|name| {
        !name.starts_with("optim.")
            && !name.starts_with(EMA_PREFIX)
            && !variables.contains_key(*name)
    });
    if let Some(name) = foreign {
        return Err(Error::file(
            path,
            format!(
                "holds {name:?}, which the model built from its configuration lacks: the checkpoint \
                 and its stored configuration disagree"
            ),
        ));
    }
    for (name, var) in variables {
        let saved = tensors.get(&name).ok_or_else(|| {
            Error::file(
                path,
                format!("checkpoint lacks variable '{name}' (different model config?)"),
            )
        })?;
        if saved.size() != var.size() {
            return Err(Error::file(
                path,
                format!(
                    "variable '{name}' has shape {:?} in the checkpoint but {:?} in the model",
                    saved.size(),
                    var.size()
                ),
            ));
        }
        crate::nn::assign(&var, &saved.to_kind(var.kind()).to_device(var.device()));
    }
    Ok(())
}
