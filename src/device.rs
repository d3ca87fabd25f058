//! Device selection: CUDA when present, else the CPU, with an explicit override.

use crate::{Error, Result};
use tch::Device;

/// A device as named by a user, before checking that it exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// CUDA device 0 when CUDA is available, else the CPU.
    Auto,
    Cpu,
    Cuda(usize),
}

/// Parses `auto`, `cpu`, `cuda` (or `gpu`) or `cuda:N`.
pub fn parse(name: &str) -> Result<Requested> {
    match name {
        "auto" => Ok(Requested::Auto),
        "cpu" => Ok(Requested::Cpu),
        "cuda" | "gpu" => Ok(Requested::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .map(Requested::Cuda)
            .ok_or_else(|| {
                Error::config(format!(
                    "unknown device '{other}'; use auto, cpu, cuda or cuda:N"
                ))
            }),
    }
}

/// The device `name` asks for ([`parse`]), checking that a requested CUDA device exists.
pub fn select(name: &str) -> Result<Device> {
    match parse(name)? {
        Requested::Auto => Ok(Device::cuda_if_available()),
        Requested::Cpu => Ok(Device::Cpu),
        Requested::Cuda(index) => {
            let count = tch::Cuda::device_count() as usize;
            if index >= count {
                return Err(Error::config(format!(
                    "device cuda:{index} requested but {count} CUDA device(s) are visible; use --device cpu"
                )));
            }
            Ok(Device::Cuda(index))
        }
    }
}

/// The flags every command takes, before or after the subcommand: where to compute and with
/// how many CPU threads.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ComputeArgs {
    /// Device: auto (CUDA when present, else CPU), cpu, cuda or cuda:N [default: the run's
    /// `device` setting, else auto].
    #[arg(long, global = true)]
    pub device: Option<String>,
    /// CPU threads for libtorch's intra-op parallelism (default: libtorch's choice, which honours
    /// OMP_NUM_THREADS). Small models run fastest with 1.
    #[arg(long, global = true)]
    pub threads: Option<i32>,
}

/// The most intra-op threads `--threads` accepts.
pub const MAX_THREADS: i32 = 1024;

impl ComputeArgs {
    /// The device named by `--device`, if any.
    pub fn device(&self) -> Result<Option<Device>> {
        self.device.as_deref().map(select).transpose()
    }

    /// The device named by `--device`, else `auto`.
    pub fn device_or_auto(&self) -> Result<Device> {
        select(self.device.as_deref().unwrap_or("auto"))
    }

    /// Checks both flags (the device's name, not yet its presence) and applies `--threads` to
    /// libtorch.
    pub fn apply(&self) -> Result<()> {
        if let Some(name) = &self.device {
            parse(name)?;
        }
        if let Some(n) = self.threads {
            if !(1..=MAX_THREADS).contains(&n) {
                return Err(Error::config(format!(
                    "--threads must be between 1 and {MAX_THREADS}, got {n}"
                )));
            }
            tch::set_num_threads(n);
        }
        Ok(())
    }
}
