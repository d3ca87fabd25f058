//! Checkpoints: one safetensors file holding the model's variables under their `VarStore` names
//! (PyTorch's `safetensors.torch.load_file` reads it), the optimiser state under `optim.*`, and
//! metadata (the step and the run's TOML config).
//!
//! Files are written to `<name>.tmp`, flushed, then renamed over the old file, so a crash or Ctrl-C
//! during a save never leaves a corrupt checkpoint.

use crate::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use tch::{Kind, Tensor};

/// What a checkpoint holds besides its tensors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckpointMeta {
    pub step: u64,
    pub config_toml: String,
}

fn dtype_of(kind: Kind) -> Result<Dtype> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Uint8 => Dtype::U8,
        other => {
            return Err(Error::config(format!(
                "cannot checkpoint tensors of kind {other:?}"
            )))
        }
    })
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::U8 => Kind::Uint8,
        _ => return None,
    })
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let mut file = std::fs::File::create(&tmp).map_err(|e| Error::file(&tmp, e.to_string()))?;
    file.write_all(bytes)
        .map_err(|e| Error::file(&tmp, e.to_string()))?;
    file.sync_all()
        .map_err(|e| Error::file(&tmp, e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::file(path, e.to_string()))?;
    Ok(())
}

/// Saves named tensors and metadata to `path` (safetensors, atomically).
pub fn save(path: &Path, tensors: &[(String, Tensor)], meta: &CheckpointMeta) -> Result<()> {
    let mut buffers = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.detach().to_device(tch::Device::Cpu).contiguous();
        let numel = t.numel();
        let size = t.kind().elt_size_in_bytes() * numel;
        let mut bytes = vec![0u8; size];
        t.f_copy_data_u8(&mut bytes, numel)?;
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        buffers.push((name.clone(), dtype_of(t.kind())?, shape, bytes));
    }
    let views = buffers
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::file(path, format!("cannot encode tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut info = HashMap::new();
    info.insert("format".to_string(), "pt".to_string());
    info.insert("genflow_step".to_string(), meta.step.to_string());
    info.insert("genflow_config".to_string(), meta.config_toml.clone());
    let bytes = safetensors::serialize(views, Some(info))
        .map_err(|e| Error::file(path, format!("cannot serialise checkpoint: {e}")))?;
    write_atomically(path, &bytes)
}

/// Loads every tensor of a checkpoint (on the CPU) and its metadata.
pub fn load(path: &Path) -> Result<(BTreeMap<String, Tensor>, CheckpointMeta)> {
    let bytes = std::fs::read(path).map_err(|e| {
        Error::file(
            path,
            format!("cannot read checkpoint ({e}); is this a genflow run folder?"),
        )
    })?;
    let (_, metadata) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::file(path, format!("corrupt or truncated checkpoint: {e}")))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::file(path, format!("corrupt or truncated checkpoint: {e}")))?;
    let info = metadata.metadata().clone().unwrap_or_default();
    let step = info
        .get("genflow_step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::file(path, "not a genflow checkpoint (no genflow_step metadata)"))?;
    let config_toml = info.get("genflow_config").cloned().unwrap_or_default();
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let kind = kind_of(view.dtype()).ok_or_else(|| {
            Error::file(
                path,
                format!("tensor {name} has unsupported dtype {:?}", view.dtype()),
            )
        })?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = Tensor::f_from_data_size(view.data(), &shape, kind)?;
        tensors.insert(name, t);
    }
    Ok((tensors, CheckpointMeta { step, config_toml }))
}

/// Copies checkpoint tensors into the variables of `vs` (every variable must be present with the
/// same shape; a mismatch names the variable).
pub fn restore_vars(
    vs: &tch::nn::VarStore,
    tensors: &BTreeMap<String, Tensor>,
    path: &Path,
) -> Result<()> {
    for (name, var) in vs.variables() {
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
