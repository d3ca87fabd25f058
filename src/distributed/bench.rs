//! All-reduce bandwidth of a group, measured the way `benches/pytorch/allreduce_bench.py` measures
//! `torch.distributed` (same sizes, same procedure), so the two compare directly
//! (`benches/allreduce-compare`).

use std::time::Instant;

use serde::Serialize;
use tch::{Kind, Tensor};

use super::{ProcessGroup, ReduceOp};
use crate::{Error, Result};

/// Warm-up all-reduces per size before timing.
pub const WARMUP: usize = 3;

/// The timing of one message size.
#[derive(Debug, Clone, Serialize)]
pub struct BandwidthRow {
    /// The message size in MB (10^6 bytes).
    pub mb: f64,
    /// The message size in bytes (a multiple of 4: an f32 tensor).
    pub bytes: usize,
    /// Timed all-reduces.
    pub rounds: usize,
    /// Median seconds of one all-reduce (the slowest rank's time in each round).
    pub median_s: f64,
    /// Fastest round, seconds.
    pub min_s: f64,
    /// Algorithm bandwidth: bytes / median time, in GB/s (10^9 bytes).
    pub algbw_gb_s: f64,
    /// Bus bandwidth: algbw * 2 (n-1) / n, what each link carries in a ring all-reduce.
    pub busbw_gb_s: f64,
}

/// Times `rounds` all-reduces (sum) of an f32 tensor of each size in `sizes_mb` (MB = 10^6 bytes)
/// on every rank of `pg`, after [`WARMUP`] untimed ones. Each round starts after a barrier; a
/// round's time is the slowest rank's. Every rank returns the same rows.
pub fn allreduce_bandwidth(
    pg: &ProcessGroup,
    sizes_mb: &[f64],
    rounds: usize,
) -> Result<Vec<BandwidthRow>> {
    if rounds == 0 {
        return Err(Error::config("rounds is 0: time at least one all-reduce"));
    }
    let mut rows = Vec::with_capacity(sizes_mb.len());
    for &mb in sizes_mb {
        if !(mb > 0.0 && mb.is_finite()) {
            return Err(Error::config(format!(
                "message size {mb} MB is not positive"
            )));
        }
        let numel = ((mb * 1e6 / 4.0).round() as i64).max(1);
        let mut t = [Tensor::f_zeros([numel], (Kind::Float, pg.device()))?];
        for _ in 0..WARMUP {
            pg.all_reduce(&mut t, ReduceOp::Sum)?;
        }
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            pg.barrier()?;
            let start = Instant::now();
            pg.all_reduce(&mut t, ReduceOp::Sum)?;
            times.push(start.elapsed().as_secs_f64());
        }
        // The slowest rank's time per round.
        let gathered = pg.all_gather(&Tensor::f_from_slice(&times)?.f_to_device(pg.device())?)?;
        let mut slowest = vec![0.0f64; rounds];
        for g in gathered {
            let v = Vec::<f64>::try_from(g.f_to_device(tch::Device::Cpu)?)?;
            for (s, x) in slowest.iter_mut().zip(v) {
                *s = s.max(x);
            }
        }
        slowest.sort_by(f64::total_cmp);
        let median_s = if rounds % 2 == 1 {
            slowest[rounds / 2]
        } else {
            0.5 * (slowest[rounds / 2 - 1] + slowest[rounds / 2])
        };
        let bytes = numel as usize * 4;
        let n = pg.world_size() as f64;
        let algbw = bytes as f64 / median_s / 1e9;
        rows.push(BandwidthRow {
            mb,
            bytes,
            rounds,
            median_s,
            min_s: slowest[0],
            algbw_gb_s: algbw,
            busbw_gb_s: if n > 1.0 {
                algbw * 2.0 * (n - 1.0) / n
            } else {
                algbw
            },
        });
    }
    Ok(rows)
}
