//! Wall-clock timing with device synchronisation, summary statistics and peak memory.

use crate::{Error, Result};
use std::time::Instant;
use tch::Device;

/// Waits for the device's queued work (CUDA kernels run asynchronously; CPU ops do not).
pub fn synchronize(device: Device) {
    if let Device::Cuda(index) = device {
        tch::Cuda::synchronize(index as i64);
    }
}

/// The process's CPU time (all threads, user + system) in milliseconds, from
/// `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`; `None` where the clock is unavailable.
pub fn process_cpu_ms() -> Option<f64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes into it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    (rc == 0).then_some(ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 * 1e-6)
}

/// One timed run: wall-clock and process CPU milliseconds.
///
/// CPU time counts the work of every thread and does not grow while the process waits for a
/// core, so on a shared machine it is a steadier companion of the wall time (with one thread it
/// equals the wall time of an idle machine; with several it also counts OpenMP spin-waiting).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub wall_ms: f64,
    pub cpu_ms: f64,
}

impl Sample {
    /// `(self - other) / divisor`, for paired measurements.
    pub fn difference(self, other: Sample, divisor: f64) -> Sample {
        Sample {
            wall_ms: (self.wall_ms - other.wall_ms) / divisor,
            cpu_ms: (self.cpu_ms - other.cpu_ms) / divisor,
        }
    }
}

/// One call of `f` on `device`, synchronised before and after.
pub fn measure(device: Device, f: &mut dyn FnMut() -> Result<()>) -> Result<Sample> {
    synchronize(device);
    let cpu = process_cpu_ms();
    let start = Instant::now();
    f()?;
    synchronize(device);
    let wall_ms = start.elapsed().as_secs_f64() * 1e3;
    let cpu_ms = cpu.zip(process_cpu_ms()).map_or(f64::NAN, |(a, b)| b - a);
    Ok(Sample { wall_ms, cpu_ms })
}

/// Runs `f` `warmup` times untimed, then measures it `samples` times.
pub fn repeat(
    device: Device,
    warmup: usize,
    samples: usize,
    f: &mut dyn FnMut() -> Result<()>,
) -> Result<Vec<Sample>> {
    for _ in 0..warmup {
        f()?;
    }
    (0..samples).map(|_| measure(device, f)).collect()
}

/// Median, minimum and maximum of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    /// The statistics of `samples` (the median of an even count is the mean of the middle two).
    pub fn of(samples: &[f64]) -> Result<Stats> {
        if samples.is_empty() || samples.iter().any(|s| !s.is_finite()) {
            return Err(Error::config(format!(
                "timing statistics need at least one finite sample, got {samples:?}; use --samples >= 1"
            )));
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
        };
        Ok(Stats {
            median,
            min: sorted[0],
            max: sorted[n - 1],
        })
    }
}

/// The process's peak resident set size in MiB (`VmHWM` of `/proc/self/status`), `None` where
/// the file does not exist (non-Linux). It never decreases, so per-workload peaks need one process
/// per workload (`benches/compare` does that).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
