//! Seeds derived from a run's seed, one stream per purpose.
//!
//! Every random draw of a run (data order, Hutchinson probes and roulette draws, test points,
//! samples) comes from a seed derived from the run's seed, the purpose ([`Stream`]) and the step,
//! so that a resumed run draws exactly what the uninterrupted one would have, and a data-parallel
//! rank draws exactly its rows of what one process would ([`BatchShard`]).

use tch::Tensor;

/// What a derived seed is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// The order of the training data in each epoch, or the toy batch of each step.
    Data = 1,
    /// The log-det estimator's probes and term counts of each step.
    Probe = 2,
    /// Test points and evaluation noise.
    Test = 3,
    /// Samples for pictures and `genflow sample`.
    Sample = 4,
    /// Random inputs a model draws while it trains (IMLE's candidate noise of each round).
    Noise = 5,
}

/// A seed for `stream` at `step`, derived from the run's `seed` (a fixed mix of the three; distinct
/// streams and steps give unrelated seeds).
pub fn derived_seed(seed: u64, stream: Stream, step: u64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (stream as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9)
        ^ step
}

/// The rows of a global batch that one process computes in data-parallel training: rows
/// `offset..offset + len` of `global`, one of `ranks` contiguous shards.
///
/// Every per-row random draw of a training step (dequantisation noise, Hutchinson probes) goes
/// through [`BatchShard::draw`]: it draws the global batch's numbers, as one process would, and
/// keeps this shard's rows. So every rank computes exactly its rows of what one process computes
/// with the whole batch, and libtorch's generator advances alike on every rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchShard {
    /// The first row of this shard in the global batch.
    pub offset: i64,
    /// The rows of this shard.
    pub len: i64,
    /// The rows of the global batch.
    pub global: i64,
    /// The number of shards the global batch is split into.
    pub ranks: i64,
}

impl BatchShard {
    /// The whole batch of `n` rows in one shard (one process).
    pub fn whole(n: i64) -> BatchShard {
        BatchShard {
            offset: 0,
            len: n,
            global: n,
            ranks: 1,
        }
    }

    /// Shard `rank` of `ranks` of a global batch of `global` rows: rows
    /// `rank * global / ranks .. (rank + 1) * global / ranks` (rounded down), so shards differ in
    /// size by at most one row and cover the batch in rank order.
    pub fn of(rank: i64, ranks: i64, global: i64) -> BatchShard {
        let start = rank * global / ranks;
        let end = (rank + 1) * global / ranks;
        BatchShard {
            offset: start,
            len: end - start,
            global,
            ranks,
        }
    }

    /// Whether this shard is the whole batch.
    pub fn is_whole(&self) -> bool {
        self.len == self.global
    }

    /// This shard's rows of `t`, a global batch along its first dimension.
    pub fn rows(&self, t: &Tensor) -> Tensor {
        if self.is_whole() {
            t.shallow_clone()
        } else {
            t.narrow(0, self.offset, self.len)
        }
    }

    /// Random numbers of shape `shape` for this shard's rows: `draw` makes them for the global
    /// batch (the first dimension `global` instead of `len`), and this shard's rows are kept. A
    /// shape whose first dimension is not this shard's rows is drawn as it is.
    pub fn draw(&self, shape: &[i64], draw: impl FnOnce(&[i64]) -> Tensor) -> Tensor {
        match shape.split_first() {
            Some((&rows, rest)) if !self.is_whole() && rows == self.len => {
                let global: Vec<i64> = std::iter::once(self.global)
                    .chain(rest.iter().copied())
                    .collect();
                draw(&global).narrow(0, self.offset, self.len)
            }
            _ => draw(shape),
        }
    }

    /// The weight of this shard's mean in the global mean: `len * ranks / global` (1 for equal
    /// shards). A mean over this shard times its weight, averaged over the ranks, is the mean over
    /// the global batch; so are the gradients of such losses once averaged.
    pub fn weight(&self) -> f64 {
        (self.len * self.ranks) as f64 / self.global as f64
    }

    /// A mean over this shard's rows times its [`weight`](Self::weight) (the mean itself when
    /// the weight is 1).
    pub fn weighted(&self, mean: &Tensor) -> Tensor {
        let w = self.weight();
        if w == 1.0 {
            mean.shallow_clone()
        } else {
            mean * w
        }
    }
}

/// Draws per-row random numbers of `shape`: for the rows of `shard` when there is one
/// ([`BatchShard::draw`]), else as they are.
pub fn draw_rows(
    shard: Option<&BatchShard>,
    shape: &[i64],
    draw: impl FnOnce(&[i64]) -> Tensor,
) -> Tensor {
    match shard {
        Some(s) => s.draw(shape, draw),
        None => draw(shape),
    }
}
