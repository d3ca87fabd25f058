//! Several processes and machines: collectives over PyTorch's c10d (Gloo for CPU tensors, NCCL for
//! CUDA tensors), the way `torch.distributed` does them, with no Python.
//!
//! A [`ProcessGroup`] joins the ranks of one run through c10d's `TCPStore` (hosted by rank 0 at
//! `MASTER_ADDR:MASTER_PORT`) and offers the collectives data-parallel training needs:
//! [`all_reduce`](ProcessGroup::all_reduce) (sum or average, coalesced over many tensors),
//! [`broadcast`](ProcessGroup::broadcast), [`all_gather`](ProcessGroup::all_gather) and
//! [`barrier`](ProcessGroup::barrier), plus [`average_gradients`](ProcessGroup::average_gradients)
//! and [`broadcast_store`](ProcessGroup::broadcast_store) for a `VarStore`, and
//! [`check_same`](ProcessGroup::check_same) to refuse runs whose ranks disagree (e.g. on their
//! configuration), and [`all_reduce_scalars`](ProcessGroup::all_reduce_scalars) for metrics.
//!
//! The environment is the one `torchrun` and cluster launchers set: `RANK`, `WORLD_SIZE`,
//! `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT` ([`GroupConfig::from_env`]).
//! [`launch::launch_local`] starts N local ranks of a program with that environment, like
//! `torchrun --standalone --nproc-per-node N`.
//!
//! Failures end in an error, never in an endless wait: every collective waits at most the group's
//! timeout, and each rank publishes a heartbeat with the number of collectives it entered, so the
//! error says which rank died (no heartbeat), left (shut its group down), or hangs (alive but
//! behind), e.g. `all_reduce (collective #7) failed on rank 0: rank 1 (pid 4242 on node3)
//! stopped: no heartbeat for over 1.6 s (its process died or its machine is unreachable); c10d:
//! ... Connection closed by peer`.
//!
//! # Backends and networks
//!
//! - **Gloo** (CPU tensors) is always built. Its connections go over the interface of this host's
//!   name (else loopback), as in PyTorch; `GLOO_SOCKET_IFNAME=eth0` (comma-separated names)
//!   chooses the interfaces on machines with several networks.
//! - **NCCL** (CUDA tensors; rank `r` uses device `cuda:LOCAL_RANK`) is compiled when the build
//!   finds CUDA's crt and CCCL headers next to the wheel, which `scripts/with-libtorch` installs
//!   when it sees a GPU or `GENFLOW_NCCL=1` is set ([`Backend::is_available`]); NCCL's own
//!   variables (`NCCL_SOCKET_IFNAME`, `NCCL_DEBUG`, ...) apply.
//! - The store's host is `MASTER_ADDR:MASTER_PORT`, hosted by rank 0 (by torchrun's agent when
//!   `TORCHELASTIC_USE_AGENT_STORE=True`); all ranks must reach it.
//!
//! # Example
//!
//! One data-parallel step. Under `torchrun`, a cluster launcher or [`launch::launch_local`] the
//! environment describes the group; run alone (as this doc test does), it is a group of one.
//!
//! ```
//! use std::time::Duration;
//! use genflow::distributed::{launch::free_port, Backend, GroupConfig, ProcessGroup, ReduceOp};
//! use genflow::tch::{nn, nn::Module, nn::OptimizerConfig, Device, Kind, Tensor};
//!
//! # fn main() -> genflow::Result<()> {
//! let timeout = Duration::from_secs(300);
//! let pg = match GroupConfig::from_env_if_set()? {
//!     Some(mut cfg) => {
//!         cfg.timeout = timeout;
//!         ProcessGroup::with_config(&cfg)?
//!     }
//!     None => ProcessGroup::new(0, 1, "127.0.0.1", free_port()?, Backend::Gloo, timeout)?,
//! };
//! let vs = nn::VarStore::new(Device::Cpu);
//! let layer = nn::linear(vs.root() / "fc", 4, 1, Default::default());
//! pg.broadcast_store(&vs)?; // every rank starts from rank 0's parameters
//! pg.check_same("configuration", b"lr = 0.1, batch = 64")?; // or refuse to start
//! let mut opt = nn::Sgd::default().build(&vs, 0.1)?;
//! // This rank's shard of the global batch.
//! let x = Tensor::randn([32, 4], (Kind::Float, Device::Cpu));
//! let loss = layer.forward(&x).square().mean(Kind::Float);
//! opt.zero_grad();
//! loss.backward();
//! pg.average_gradients(&vs)?; // the gradient of the global batch, on every rank
//! opt.step();
//! // A metric: the mean over the ranks.
//! let mut metric = [loss.detach()];
//! pg.all_reduce(&mut metric, ReduceOp::Average)?;
//! if pg.is_main() {
//!     println!("loss {:.4} over {} ranks", metric[0].double_value(&[]), pg.world_size());
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The same on two local processes, from one program (`tests/distributed.rs` runs its ranks this
//! way):
//!
//! ```no_run
//! # fn main() -> genflow::Result<()> {
//! let me = std::env::current_exe()?;
//! let status = genflow::distributed::launch::launch_local(2, &me, &["--worker"])?;
//! std::process::exit(status.code().unwrap_or(1));
//! # }
//! ```

pub mod bench;
mod ffi;
mod group;
pub mod launch;

use std::time::Duration;

pub use group::ProcessGroup;

use crate::{Error, Result};

/// The default timeout of a collective (and of the rendezvous).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The default cap on one all-reduce buffer in [`ProcessGroup::average_gradients`] (25 MiB, as
/// PyTorch's DDP).
pub const DEFAULT_BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// The collective library of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Gloo: CPU tensors, over TCP.
    Gloo,
    /// NCCL: CUDA tensors (one device per rank); present when the build found the CUDA headers
    /// ([`Backend::is_available`]).
    Nccl,
}

impl Backend {
    /// The backend for tensors on `device`: NCCL for CUDA, Gloo otherwise.
    pub fn for_device(device: tch::Device) -> Backend {
        if device.is_cuda() {
            Backend::Nccl
        } else {
            Backend::Gloo
        }
    }

    /// Whether this build can create groups with this backend.
    pub fn is_available(self) -> bool {
        match self {
            Backend::Gloo => true,
            // SAFETY: a plain query of the shim.
            Backend::Nccl => unsafe { ffi::gf_has_nccl() != 0 },
        }
    }

    /// "gloo" or "nccl".
    pub fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }
}

/// How [`ProcessGroup::all_reduce`] combines the ranks' tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// The elementwise sum over the ranks.
    Sum,
    /// The elementwise mean over the ranks (the sum divided by the world size; floating-point
    /// tensors only).
    Average,
}

/// Everything a rank needs to join its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// This process's rank, 0..world_size.
    pub rank: usize,
    /// The number of ranks.
    pub world_size: usize,
    /// This process's rank on its machine; the NCCL backend uses CUDA device `local_rank`.
    pub local_rank: usize,
    /// The host of the rendezvous store (rank 0's machine).
    pub master_addr: String,
    /// The store's TCP port.
    pub master_port: u16,
    /// Gloo (CPU tensors) or NCCL (CUDA tensors).
    pub backend: Backend,
    /// How long the rendezvous and each collective may take before failing.
    pub timeout: Duration,
    /// When true, a launcher agent (torchrun's, `TORCHELASTIC_USE_AGENT_STORE=True`) hosts the
    /// store and every rank is a client; otherwise rank 0 hosts it.
    pub agent_store: bool,
    /// The launcher's restart count (`TORCHELASTIC_RESTART_COUNT`, default 0): each attempt's
    /// keys are separate in a store that outlives the ranks.
    pub attempt: u32,
}

impl GroupConfig {
    /// Reads the group from the environment: `RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`
    /// (required), `LOCAL_RANK` (default: `RANK`, right on one machine),
    /// `TORCHELASTIC_USE_AGENT_STORE` and `TORCHELASTIC_RESTART_COUNT`. Gloo backend and [`DEFAULT_TIMEOUT`]; change the fields to
    /// taste. The error names the missing or invalid variable.
    pub fn from_env() -> Result<GroupConfig> {
        Self::from_lookup(|k| std::env::var(k).ok())?.ok_or_else(|| {
            Error::config(
                "RANK and WORLD_SIZE are not set: start the ranks with `torchrun`, a cluster launcher or \
                 genflow::distributed::launch::launch_local, which set RANK, WORLD_SIZE, LOCAL_RANK, \
                 MASTER_ADDR and MASTER_PORT",
            )
        })
    }

    /// Like [`from_env`](Self::from_env), but `Ok(None)` when neither `RANK` nor `WORLD_SIZE` is
    /// set (a run of one process that no launcher started).
    pub fn from_env_if_set() -> Result<Option<GroupConfig>> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// [`from_env_if_set`](Self::from_env_if_set) over any variable lookup (for tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<GroupConfig>> {
        let var = |name: &str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if var("RANK").is_none() && var("WORLD_SIZE").is_none() {
            return Ok(None);
        }
        let required = |name: &str| {
            var(name).ok_or_else(|| {
                Error::config(format!(
                    "environment variable {name} is not set; a distributed run needs RANK, WORLD_SIZE, \
                     MASTER_ADDR and MASTER_PORT (torchrun and genflow's launcher set them)"
                ))
            })
        };
        let number = |name: &str, v: String| {
            v.parse::<usize>().map_err(|_| {
                Error::config(format!(
                    "environment variable {name}={v:?} is not a non-negative integer"
                ))
            })
        };
        let rank = number("RANK", required("RANK")?)?;
        let world_size = number("WORLD_SIZE", required("WORLD_SIZE")?)?;
        let local_rank = match var("LOCAL_RANK") {
            Some(v) => number("LOCAL_RANK", v)?,
            None => rank,
        };
        let master_addr = required("MASTER_ADDR")?;
        let port = required("MASTER_PORT")?;
        let master_port = port.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(|| {
            Error::config(format!(
                "environment variable MASTER_PORT={port:?} is not a port in 1..65535"
            ))
        })?;
        let agent_store =
            var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let attempt = match var("TORCHELASTIC_RESTART_COUNT") {
            Some(v) => v.parse::<u32>().map_err(|_| {
                Error::config(format!(
                    "environment variable TORCHELASTIC_RESTART_COUNT={v:?} is not a non-negative integer"
                ))
            })?,
            None => 0,
        };
        let cfg = GroupConfig {
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port,
            backend: Backend::Gloo,
            timeout: DEFAULT_TIMEOUT,
            agent_store,
            attempt,
        };
        cfg.validate()?;
        Ok(Some(cfg))
    }

    /// Checks the fields' ranges (the error names the field).
    pub fn validate(&self) -> Result<()> {
        if self.world_size == 0 {
            return Err(Error::config("WORLD_SIZE is 0; it must be at least 1"));
        }
        if self.rank >= self.world_size {
            return Err(Error::config(format!(
                "RANK={} is not below WORLD_SIZE={}: ranks run 0..{}",
                self.rank,
                self.world_size,
                self.world_size - 1
            )));
        }
        if self.master_addr.is_empty() {
            return Err(Error::config(
                "MASTER_ADDR is empty: give rank 0's host name or address",
            ));
        }
        if self.master_port == 0 {
            return Err(Error::config(
                "MASTER_PORT is 0: give the port rank 0's store listens on",
            ));
        }
        if self.timeout.is_zero() {
            return Err(Error::config("the process group's timeout is zero"));
        }
        if !self.backend.is_available() {
            return Err(Error::config(
                "this genflow build has no NCCL backend: build it where the CUDA headers are present \
                 (`GENFLOW_NCCL=1 scripts/with-libtorch cargo build --release` installs them), or use Gloo",
            ));
        }
        Ok(())
    }
}
