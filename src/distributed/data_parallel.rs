//! Data-parallel training: the context a run installs while it trains on several ranks, and what
//! the layers above ask of it.
//!
//! A run of `R` ranks trains one model as one process would with the same global batches: every
//! rank starts from rank 0's weights, computes its shard of each global batch
//! ([`DataParallel::shard`]), and every rank applies the same averaged gradient. What the layers
//! above do with the [`active`] context (none outside data-parallel training, and then nothing
//! changes):
//!
//! - the optimiser ([`crate::optim::Optimizer::step`]) averages the gradients before it uses
//!   them ([`DataParallel::average_gradients`]), like Horovod's `DistributedOptimizer`, so every
//!   objective and every optimiser of a task gets the average without code of its own;
//! - objectives read their shard's rows of the global batch and weight their means by
//!   [`BatchShard::weight`]; per-row random draws are those of the global batch
//!   ([`BatchShard::draw`]);
//! - ActNorm's data-dependent initialisation takes the statistics of the global batch
//!   ([`DataParallel::channel_moments`]), and batch normalisation normalises with them and
//!   backpropagates through them ([`DataParallel::batch_norm`]);
//! - the training loop logs the ranks' mean loss and metrics ([`DataParallel::mean`]), stops
//!   every rank together ([`DataParallel::any`]), and writes files on rank 0 only
//!   ([`DataParallel::is_main`]).
//!
//! Spectral-norm power iterations, the moving average of the weights and every other
//! deterministic function of the weights then stay identical on every rank without
//! communication, because the weights do.
//!
//! The context is per thread (like the training loop): [`activate`] installs it
//! until the returned guard is dropped, so tests that train in parallel threads do not meet each
//! other's contexts.
//!
//! # Tasks
//!
//! | task | data-parallel |
//! |---|---|
//! | `toy-density` | yes |
//! | `image-density` | yes |
//! | `classifier` | yes (synchronised batch normalisation) |
//! | `feature-classifier` | yes (synchronised batch normalisation) |
//! | `toy-gan` | yes, both updates (alternating: the discriminator's gradients are averaged before its step, the generator's before its own), batch-normalised generators included |
//! | `image-gan` | yes, both updates, batch normalisation in both nets; one process only with a gradient penalty (`train.penalty`) through a batch-normalised discriminator (synchronised batch normalisation has no second derivative) |
//! | `glann` | no: one process only (its per-image code table and IMLE rounds are not sharded) |
//!
//! `tests/data_parallel.rs` checks every "yes" row: two ranks with half of each global batch
//! leave the weights, buffers and optimiser state of one process with the whole batch (f64, to
//! 1e-12, after 1 and 20 steps).
//!
//! A task that trains on one process only says so (`TaskSpec::single_process_only` in
//! `crate::tasks`), and a data-parallel run of it refuses to start, on every rank before it joins
//! the group, with a one-line error naming the task.
//!
//! # A new task family
//!
//! A task trained through `crate::tasks` gets the group, the broadcast, the rank-0-only writes,
//! the logged means and the gradient average (in every [`crate::optim::Optimizer`] it steps)
//! without code of its own. For its training to be that of one process with the global batch,
//! its objective:
//! - reads [`shard`]`(global rows)` and computes on [`BatchShard::rows`] of each global batch,
//!   returning means times [`BatchShard::weight`] ([`BatchShard::weighted`]);
//! - draws per-row randomness (latent codes, noise) with [`BatchShard::draw`], after seeding
//!   libtorch's generator alike on every rank (from the step, as every task does);
//! - normalises batches with [`crate::nn::BatchNorm`] rather than `tch::nn::BatchNorm` (whose
//!   synchronised backward pass is first-order: nothing may differentiate through it twice, as
//!   a gradient penalty would);
//! - when it overrides `Objective::update`, passes its logged values through
//!   `crate::train::global_values` before checking them, and backpropagates with
//!   `crate::train::backward` (or ends with `crate::train::descend`, which does both); an update
//!   in parts steps each part with [`crate::optim::Optimizer::step_part`], which averages that
//!   part's gradients;
//! - or, until it does all this, declares that it trains on one process only.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::{ProcessGroup, ReduceOp, DEFAULT_BUCKET_BYTES};
use crate::seeds::BatchShard;
use crate::{Error, Result};

thread_local! {
    static ACTIVE: RefCell<Option<Rc<DataParallel>>> = const { RefCell::new(None) };
}

/// The data-parallel context this thread trains under, if any.
pub fn active() -> Option<Rc<DataParallel>> {
    ACTIVE.with(|a| a.borrow().clone())
}

/// Makes `dp` the [`active`] context on this thread while the guard lives; `None` makes none
/// active (a single-process training started inside another's keeps to itself).
pub fn activate(dp: Option<Rc<DataParallel>>) -> Activation {
    let previous = ACTIVE.with(|a| std::mem::replace(&mut *a.borrow_mut(), dp));
    Activation { previous }
}

/// This rank's shard of a global batch of `global` rows under the [`active`] context; the whole
/// batch otherwise.
pub fn shard(global: i64) -> Result<BatchShard> {
    match active() {
        Some(dp) => dp.shard(global),
        None => Ok(BatchShard::whole(global)),
    }
}

/// The ranks of a data-parallel run, with the time they spent communicating.
pub struct DataParallel {
    group: ProcessGroup,
    communicating: Cell<Duration>,
}

/// Keeps a context [`active`] on this thread until dropped (then the previous one is back).
#[must_use = "the context is active only while the guard lives"]
pub struct Activation {
    previous: Option<Rc<DataParallel>>,
}

impl Drop for Activation {
    fn drop(&mut self) {
        let previous = self.previous.take();
        ACTIVE.with(|a| *a.borrow_mut() = previous);
    }
}

impl DataParallel {
    /// The context of the ranks of `group`.
    pub fn new(group: ProcessGroup) -> Rc<DataParallel> {
        Rc::new(DataParallel {
            group,
            communicating: Cell::new(Duration::ZERO),
        })
    }

    /// Makes this context the [`active`] one on this thread while the guard lives.
    pub fn activate(self: &Rc<Self>) -> Activation {
        activate(Some(self.clone()))
    }

    /// The process group.
    pub fn group(&self) -> &ProcessGroup {
        &self.group
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.group.rank()
    }

    /// The number of ranks.
    pub fn world_size(&self) -> usize {
        self.group.world_size()
    }

    /// Whether this is rank 0, the rank that writes the run's files.
    pub fn is_main(&self) -> bool {
        self.group.is_main()
    }

    /// The wall-clock time spent in this context's collectives so far (waiting for slower ranks
    /// included; the all-reduces inside batch normalisation's backward pass are not counted).
    pub fn communication_time(&self) -> Duration {
        self.communicating.get()
    }

    /// Runs one collective, adding its time to [`communication_time`](Self::communication_time).
    fn timed<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let start = Instant::now();
        let out = f();
        self.communicating
            .set(self.communicating.get() + start.elapsed());
        out
    }

    /// This rank's contiguous shard of a global batch of `global` rows
    /// ([`BatchShard::of`]). Errors when the batch has fewer rows than there are ranks.
    pub fn shard(&self, global: i64) -> Result<BatchShard> {
        let ranks = self.world_size() as i64;
        if global < ranks {
            return Err(Error::config(format!(
                "a global batch of {global} rows cannot be split over {ranks} ranks; every rank \
                 needs at least one row (raise train.batch_size, or choose data.train_subset so \
                 that the last batch of an epoch holds at least {ranks} images)"
            )));
        }
        Ok(BatchShard::of(self.rank() as i64, ranks, global))
    }

    /// The mean of each of `values` over the ranks (f64, one collective).
    pub fn mean(&self, values: &[f64]) -> Result<Vec<f64>> {
        self.timed(|| self.group.all_reduce_scalars(values, ReduceOp::Average))
    }

    /// For each flag, whether it is set on any rank (one collective).
    pub fn any(&self, flags: &[bool]) -> Result<Vec<bool>> {
        let values: Vec<f64> = flags.iter().map(|&f| f64::from(u8::from(f))).collect();
        let sums = self.timed(|| self.group.all_reduce_scalars(&values, ReduceOp::Sum))?;
        Ok(sums.into_iter().map(|s| s > 0.0).collect())
    }

    /// Averages the gradients of `vars` (listed in the same order on every rank) over the ranks,
    /// in buckets of [`DEFAULT_BUCKET_BYTES`] ([`ProcessGroup::average_gradients_of`]).
    pub fn average_gradients(&self, vars: &[Tensor]) -> Result<()> {
        self.timed(|| self.group.average_gradients_of(vars, DEFAULT_BUCKET_BYTES))
    }

    /// The mean and the population standard deviation of every row of `rows` (`[C, n]`, this
    /// rank's columns) over the columns of every rank, in the dtype of `rows`: reduced in f64 in
    /// two passes (the sums and counts, then the squared deviations from the global mean), so
    /// that they are those of one process holding every rank's columns up to rounding.
    pub fn channel_moments(&self, rows: &Tensor) -> Result<(Tensor, Tensor)> {
        let (c, n) = match rows.size()[..] {
            [c, n] => (c, n),
            _ => {
                return Err(Error::shape(format!(
                    "channel moments take rows [C, n], got shape {:?}",
                    rows.size()
                )))
            }
        };
        let rows = rows.f_detach()?.f_to_kind(Kind::Double)?;
        let count = Tensor::f_from_slice(&[n as f64])?.f_to_device(rows.device())?;
        let mut stats = [Tensor::f_cat(
            &[rows.f_sum_dim_intlist(1, false, Kind::Double)?, count],
            0,
        )?];
        self.timed(|| self.group.all_reduce(&mut stats, ReduceOp::Sum))?;
        let count = stats[0].f_double_value(&[c])?;
        let mean = stats[0].f_narrow(0, 0, c)? / count;
        let deviations = rows.f_sub(&mean.f_unsqueeze(1)?)?.f_square()?;
        let mut squares = [deviations.f_sum_dim_intlist(1, false, Kind::Double)?];
        self.timed(|| self.group.all_reduce(&mut squares, ReduceOp::Sum))?;
        let std = (&squares[0] / count).f_sqrt()?;
        let kind = rows.kind();
        Ok((mean.f_to_kind(kind)?, std.f_to_kind(kind)?))
    }

    /// Batch normalisation of `x` in training mode with the statistics of the global batch
    /// ([`ProcessGroup::sync_batch_norm`]).
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm(
        &self,
        x: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        running_mean: &Tensor,
        running_var: &Tensor,
        momentum: f64,
        eps: f64,
    ) -> Result<Tensor> {
        self.timed(|| {
            self.group.sync_batch_norm(
                x,
                weight,
                bias,
                Some(running_mean),
                Some(running_var),
                momentum,
                eps,
            )
        })
    }

    /// The error of a backward pass that failed on this rank: when a collective inside it
    /// (batch normalisation's) failed, the diagnosis naming the ranks responsible.
    pub fn backward_failed(&self, e: Error) -> Error {
        self.group.explain_failure("backward", &e.to_string())
    }

    /// Copies every variable of `vs` from rank 0 to the other ranks.
    pub fn broadcast_store(&self, vs: &VarStore) -> Result<()> {
        self.timed(|| self.group.broadcast_store(vs))
    }

    /// Checks that every rank passes the same `bytes` ([`ProcessGroup::check_same`]).
    pub fn check_same(&self, label: &str, bytes: &[u8]) -> Result<()> {
        self.timed(|| self.group.check_same(label, bytes))
    }

    /// Checks that `tensors` hold the same values on every rank (compared through a hash of
    /// their bytes; the error names the ranks that differ from rank 0).
    pub fn check_same_tensors(&self, label: &str, tensors: &[Tensor]) -> Result<()> {
        let mut bytes = Vec::new();
        for t in tensors {
            let t = t.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?;
            let numel = t.numel();
            let start = bytes.len();
            bytes.resize(start + numel * t.kind().elt_size_in_bytes(), 0);
            t.f_copy_data_u8(&mut bytes[start..], numel)?;
        }
        self.check_same(label, &bytes)
    }

    /// Runs `on_main` on rank 0 and gives its result to every rank: its bytes, or its failure
    /// (rank 0 gets its own error; the other ranks an error quoting it), so that every rank goes
    /// on, or stops, together. The other ranks do not run `on_main`.
    pub fn from_main(&self, on_main: impl FnOnce() -> Result<Vec<u8>>) -> Result<Vec<u8>> {
        let outcome = if self.is_main() {
            Some(on_main())
        } else {
            None
        };
        let (ok, payload) = match &outcome {
            Some(Ok(bytes)) => (1, bytes.clone()),
            Some(Err(e)) => (0, e.to_string().into_bytes()),
            None => (0, Vec::new()),
        };
        let device = self.group.device();
        let mut header = [Tensor::f_from_slice(&[ok, payload.len() as i64])?.f_to_device(device)?];
        self.timed(|| self.group.broadcast(&mut header, 0))?;
        let header = Vec::<i64>::try_from(header[0].f_to_device(Device::Cpu)?)?;
        let (ok, len) = (header[0] == 1, header[1]);
        let mut body = [if self.is_main() {
            Tensor::f_from_slice(&payload)?.f_to_device(device)?
        } else {
            Tensor::f_zeros([len], (Kind::Uint8, device))?
        }];
        if len > 0 {
            self.timed(|| self.group.broadcast(&mut body, 0))?;
        }
        match outcome {
            Some(result) => result,
            None if ok => Ok(Vec::<u8>::try_from(body[0].f_to_device(Device::Cpu)?)?),
            None => Err(Error::distributed(format!(
                "rank 0 failed: {}",
                String::from_utf8_lossy(&Vec::<u8>::try_from(body[0].f_to_device(Device::Cpu)?)?)
            ))),
        }
    }
}

impl std::fmt::Debug for DataParallel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataParallel")
            .field("group", &self.group)
            .field("communicating", &self.communicating.get())
            .finish()
    }
}
