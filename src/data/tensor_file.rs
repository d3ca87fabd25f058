//! Named tensors in one `.safetensors` file (the format of Hugging Face's `safetensors`; PyTorch's
//! `safetensors.torch.load_file` reads what [`save`] writes), with string metadata. Checkpoints,
//! encoded latents and image tensors all use it.
//!
//! ```
//! use genflow::data::tensor_file;
//! use tch::Tensor;
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("z.safetensors");
//! let z = Tensor::from_slice(&[1.5f32, -2.0]).reshape([1, 2]);
//! tensor_file::save(&path, &[("z".to_string(), z.shallow_clone())], Default::default())?;
//! let (tensors, _meta) = tensor_file::load(&path)?;
//! assert!(tensors["z"].equal(&z));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tch::{Kind, Tensor};

fn dtype_of(kind: Kind, name: &str) -> Result<Dtype> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        other => {
            return Err(Error::config(format!(
                "cannot store tensor {name} of kind {other:?} (f32, f64, i64, i32, u8 or bool)"
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
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

/// The metadata key of the data checksum genflow writes and checks.
pub const CHECKSUM_KEY: &str = "genflow_sha256";

/// SHA-256 over every tensor's name, dtype, shape and bytes, in name order: what
/// [`CHECKSUM_KEY`] holds, so that flipped or lost bytes are found on load.
fn checksum(buffers: &[(String, Dtype, Vec<usize>, Vec<u8>)]) -> String {
    use sha2::{Digest, Sha256};
    let mut sorted: Vec<&(String, Dtype, Vec<usize>, Vec<u8>)> = buffers.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hash = Sha256::new();
    for (name, dtype, shape, bytes) in sorted {
        hash.update(name.as_bytes());
        hash.update(format!("{dtype:?}{shape:?}").as_bytes());
        hash.update(bytes);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The raw bytes of a tensor (copied to the CPU, contiguous) with its dtype and shape.
fn raw(name: &str, t: &Tensor) -> Result<(String, Dtype, Vec<usize>, Vec<u8>)> {
    let t = t.detach().to_device(tch::Device::Cpu).contiguous();
    let numel = t.numel();
    let mut bytes = vec![0u8; t.kind().elt_size_in_bytes() * numel];
    t.f_copy_data_u8(&mut bytes, numel)?;
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    Ok((name.to_string(), dtype_of(t.kind(), name)?, shape, bytes))
}

/// Saves named tensors (copied to the CPU) and `metadata` to `path`, atomically, with a checksum
/// of the tensors ([`CHECKSUM_KEY`]) that [`load`] verifies.
pub fn save(
    path: &Path,
    tensors: &[(String, Tensor)],
    mut metadata: HashMap<String, String>,
) -> Result<()> {
    let buffers = tensors
        .iter()
        .map(|(name, t)| raw(name, t))
        .collect::<Result<Vec<_>>>()?;
    metadata.insert(CHECKSUM_KEY.into(), checksum(&buffers));
    let views = buffers
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::file(path, format!("cannot encode tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    metadata
        .entry("format".into())
        .or_insert_with(|| "pt".into());
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::file(path, format!("cannot serialise the tensors: {e}")))?;
    crate::fs::write_atomic(path, &bytes)
}

/// Loads every tensor of a `.safetensors` file (on the CPU) and its metadata; a truncated or
/// foreign file, or one whose tensors do not match the checksum genflow stored in it, is an error
/// naming it.
pub fn load(path: &Path) -> Result<(BTreeMap<String, Tensor>, HashMap<String, String>)> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read the file: {e}")))?;
    let (_, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| {
        Error::file(
            path,
            format!("not a safetensors file, or corrupt or truncated: {e}"),
        )
    })?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        Error::file(
            path,
            format!("not a safetensors file, or corrupt or truncated: {e}"),
        )
    })?;
    let metadata = metadata.metadata().clone().unwrap_or_default();
    let mut tensors = BTreeMap::new();
    let mut buffers = Vec::new();
    for (name, view) in st.tensors() {
        // Names come from the file: quoted, so that one holding a line break keeps the error on
        // one line.
        let kind = kind_of(view.dtype()).ok_or_else(|| {
            Error::file(
                path,
                format!("tensor {name:?} has unsupported dtype {:?}", view.dtype()),
            )
        })?;
        // The file's bytes bound the product of its dimensions, not the dimensions themselves when
        // one is 0: each, and the product of those not 0 (libtorch's strides), must fit an i64.
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let fits = view.shape().iter().try_fold(1i64, |acc, &d| {
            acc.checked_mul(i64::try_from(d.max(1)).ok()?)
        });
        if fits.is_none() {
            return Err(Error::file(
                path,
                format!(
                    "tensor {name:?} has shape {:?}, too large for a tensor",
                    view.shape()
                ),
            ));
        }
        tensors.insert(
            name.clone(),
            Tensor::f_from_data_size(view.data(), &shape, kind)?,
        );
        buffers.push((
            name,
            view.dtype(),
            view.shape().to_vec(),
            view.data().to_vec(),
        ));
    }
    if let Some(stored) = metadata.get(CHECKSUM_KEY) {
        if *stored != checksum(&buffers) {
            return Err(Error::file(
                path,
                "corrupt: its tensors do not match the checksum stored with them (the file was \
                 damaged after it was written)",
            ));
        }
    }
    Ok((tensors, metadata))
}
