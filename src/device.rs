//! Device selection: CUDA when present, else the CPU, with an explicit override.

use crate::{Error, Result};
use tch::Device;

/// Parses `auto` (CUDA if available, else CPU), `cpu`, `cuda` or `cuda:N`.
pub fn select(name: &str) -> Result<Device> {
    match name {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => require_cuda(0),
        other => match other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => require_cuda(n),
            None => Err(Error::config(format!(
                "unknown device '{other}'; use auto, cpu, cuda or cuda:N"
            ))),
        },
    }
}

fn require_cuda(index: usize) -> Result<Device> {
    let count = tch::Cuda::device_count() as usize;
    if index >= count {
        return Err(Error::config(format!(
            "device cuda:{index} requested but {count} CUDA device(s) are visible; use --device cpu"
        )));
    }
    Ok(Device::Cuda(index))
}
