//! [`ProcessGroup`]: rendezvous, collectives, liveness and failure diagnosis.

use std::ffi::{c_char, c_int};
use std::fmt::Write as _;
use std::ptr::{null_mut, NonNull};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

use super::ffi::{self, call, ShimError, Store};
use super::{Backend, GroupConfig, ReduceOp, DEFAULT_BUCKET_BYTES};
use crate::{Error, Result};

/// How often each rank publishes its heartbeat (a counter and how many collectives it entered).
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
/// After a failure, how long a peer's heartbeat is watched before the peer counts as stopped.
const HEARTBEAT_WATCH: Duration = Duration::from_millis(1600);

/// A group of processes (ranks) that run collectives together over PyTorch's c10d: Gloo for CPU
/// tensors, NCCL for CUDA tensors (when compiled in).
///
/// Every rank must call the same collectives in the same order with tensors of the same shapes
/// and dtypes. Each collective waits at most the group's timeout; when one fails (a peer died,
/// hung or ran different code), the error names the peer(s) responsible where it can, and the
/// group refuses every later collective. Dropping the group shuts it down.
pub struct ProcessGroup {
    raw: NonNull<ffi::RawGroup>,
    store: Store,
    heartbeat: Option<Heartbeat>,
    cfg: GroupConfig,
    keys: Keys,
    /// "pid P on host H" of every rank, from the rendezvous.
    peers: Vec<String>,
    entered: Arc<AtomicU64>,
    failed: Mutex<Option<String>>,
    /// Set when the store stopped answering (its host died): Drop then leaves it alone.
    store_gone: AtomicBool,
}

// SAFETY: the group's C++ objects are used by one thread at a time (ProcessGroup is not Sync), and
// c10d's backends accept calls from any thread.
unsafe impl Send for ProcessGroup {}

/// The store keys of one group: under `genflow/<attempt>/`, so that a launcher's restarts (which
/// keep its store) do not meet the keys of earlier attempts.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn new(attempt: u32) -> Keys {
        Keys {
            prefix: format!("genflow/{attempt}/"),
        }
    }
    fn claim(&self, rank: usize) -> String {
        format!("{}claim/{rank}", self.prefix)
    }
    fn join(&self, rank: usize) -> String {
        format!("{}join/{rank}", self.prefix)
    }
    fn hb(&self, rank: usize) -> String {
        format!("{}hb/{rank}", self.prefix)
    }
    fn state(&self, rank: usize) -> String {
        format!("{}state/{rank}", self.prefix)
    }
    fn exited(&self) -> String {
        format!("{}exited", self.prefix)
    }
    /// The prefix of the backend's own keys.
    fn backend(&self, backend: Backend) -> String {
        format!("{}{}/", self.prefix, backend.name())
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast::<c_char>(), buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn list(ranks: &[usize]) -> String {
    let names: Vec<String> = ranks.iter().map(|r| r.to_string()).collect();
    let s = if ranks.len() == 1 { "rank" } else { "ranks" };
    format!("{s} {}", names.join(", "))
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Publishes this rank's liveness from a thread of its own, over a connection of its own.
struct Heartbeat {
    stop: Option<mpsc::Sender<()>>,
    done: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeat {
    fn start(store: Store, rank: usize, key: String, entered: Arc<AtomicU64>) -> Heartbeat {
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("genflow-heartbeat-{rank}"))
            .spawn(move || {
                let mut beat: u64 = 1;
                loop {
                    beat += 1;
                    let value = format!("{beat} {}", entered.load(Ordering::SeqCst));
                    // A broken store connection does not recover: stop beating; the peers'
                    // diagnosis notices the silence.
                    if store.set(&key, value.as_bytes()).is_err() {
                        break;
                    }
                    match stop_rx.recv_timeout(HEARTBEAT_INTERVAL) {
                        Err(RecvTimeoutError::Timeout) => continue,
                        _ => break,
                    }
                }
                drop(store);
                let _ = done_tx.send(());
            });
        match thread {
            Ok(t) => Heartbeat {
                stop: Some(stop_tx),
                done: done_rx,
                thread: Some(t),
            },
            // Without the thread, peers see this rank as stopped only when they diagnose a failure.
            Err(_) => Heartbeat {
                stop: None,
                done: done_rx,
                thread: None,
            },
        }
    }

    /// Stops the thread; waits for it briefly (a store that hangs must not hang the caller).
    fn stop(&mut self) {
        self.stop = None;
        if let Some(t) = self.thread.take() {
            if self.done.recv_timeout(HEARTBEAT_INTERVAL * 4).is_ok() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One peer as the store shows it: heartbeat counter, collectives entered, state.
#[derive(Debug, Clone, PartialEq)]
struct PeerView {
    beat: Option<u64>,
    entered: Option<u64>,
    state: Option<String>,
}

impl ProcessGroup {
    /// Joins the group of `world_size` ranks whose rendezvous store is at
    /// `master_addr:master_port` (hosted by rank 0), as `rank`, on one machine (the local rank is
    /// the rank). See [`GroupConfig`] for every setting, and [`ProcessGroup::from_env`].
    pub fn new(
        rank: usize,
        world_size: usize,
        master_addr: &str,
        master_port: u16,
        backend: Backend,
        timeout: Duration,
    ) -> Result<ProcessGroup> {
        ProcessGroup::with_config(&GroupConfig {
            rank,
            world_size,
            local_rank: rank,
            master_addr: master_addr.to_string(),
            master_port,
            backend,
            timeout,
            agent_store: false,
            attempt: 0,
        })
    }

    /// Joins the group that the environment describes (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
    /// `MASTER_ADDR`, `MASTER_PORT`, as `torchrun`, [`launch_local`](super::launch::launch_local)
    /// and cluster launchers set them), with the Gloo backend and the given timeout.
    pub fn from_env(timeout: Duration) -> Result<ProcessGroup> {
        let mut cfg = GroupConfig::from_env()?;
        cfg.timeout = timeout;
        ProcessGroup::with_config(&cfg)
    }

    /// Joins the group `cfg` describes: connects to the rendezvous store (rank 0 hosts it, unless
    /// `cfg.agent_store`), waits up to the timeout for every rank to register (naming the ranks
    /// that did not), checks that every rank runs the same genflow version with the same world
    /// size, then connects the backend.
    pub fn with_config(cfg: &GroupConfig) -> Result<ProcessGroup> {
        cfg.validate()?;
        let where_ = format!("{}:{}", cfg.master_addr, cfg.master_port);
        let is_server = cfg.rank == 0 && !cfg.agent_store;
        let store = Store::open(
            &cfg.master_addr,
            cfg.master_port,
            is_server,
            cfg.world_size,
            cfg.timeout,
        )
        .map_err(|e| {
            if is_server {
                Error::distributed(format!(
                    "rank 0 could not host the rendezvous store at {where_}: {} (is the port in use? choose another MASTER_PORT)",
                    e.msg
                ))
            } else {
                Error::distributed(format!(
                    "rank {} could not reach the rendezvous store at {where_} within {}: {} (is rank 0 running, and are MASTER_ADDR and MASTER_PORT the same on every rank?)",
                    cfg.rank,
                    secs(cfg.timeout),
                    e.msg
                ))
            }
        })?;
        let store_err = |e: ShimError| {
            Error::distributed(format!(
                "rank {}: rendezvous store at {where_} failed during the rendezvous: {}",
                cfg.rank, e.msg
            ))
        };
        let keys = Keys::new(cfg.attempt);
        let claims = store.add(&keys.claim(cfg.rank), 1).map_err(store_err)?;
        if claims > 1 {
            return Err(Error::distributed(format!(
                "two processes joined the group at {where_} as rank {}: give every process its own RANK",
                cfg.rank
            )));
        }
        let me = format!(
            "{} {} {} {}",
            cfg.world_size,
            std::process::id(),
            env!("CARGO_PKG_VERSION"),
            hostname()
        );
        let entered = Arc::new(AtomicU64::new(0));
        store.set(&keys.hb(cfg.rank), b"1 0").map_err(store_err)?;
        store
            .set(&keys.join(cfg.rank), me.as_bytes())
            .map_err(store_err)?;
        let heartbeat = store
            .try_clone()
            .ok()
            .map(|s| Heartbeat::start(s, cfg.rank, keys.hb(cfg.rank), entered.clone()));

        let peers = Self::rendezvous(&store, &keys, cfg, &where_)?;
        let c_prefix = ffi::cstring("store prefix", &keys.backend(cfg.backend))?;

        let timeout_ms = ffi::millis(cfg.timeout);
        let rank = c_int::try_from(cfg.rank).map_err(|_| Error::config("rank too large"))?;
        let world =
            c_int::try_from(cfg.world_size).map_err(|_| Error::config("world size too large"))?;
        let mut raw = null_mut();
        let made = match cfg.backend {
            Backend::Gloo => {
                let ifnames = std::env::var("GLOO_SOCKET_IFNAME").unwrap_or_default();
                let c_if = ffi::cstring("GLOO_SOCKET_IFNAME", &ifnames)?;
                call(|err| unsafe {
                    ffi::gf_group_new_gloo(
                        store.as_ptr(),
                        c_prefix.as_ptr(),
                        rank,
                        world,
                        timeout_ms,
                        c_if.as_ptr(),
                        &mut raw,
                        err,
                    )
                })
            }
            Backend::Nccl => {
                let device = c_int::try_from(cfg.local_rank)
                    .map_err(|_| Error::config("local rank too large"))?;
                call(|err| unsafe {
                    ffi::gf_group_new_nccl(
                        store.as_ptr(),
                        c_prefix.as_ptr(),
                        rank,
                        world,
                        timeout_ms,
                        device,
                        &mut raw,
                        err,
                    )
                })
            }
        };
        made.map_err(|e| {
            Error::distributed(format!(
                "rank {} could not start the {} backend: {}",
                cfg.rank,
                cfg.backend.name(),
                e.msg
            ))
        })?;
        let raw = NonNull::new(raw)
            .ok_or_else(|| Error::distributed("the shim returned no process group"))?;
        Ok(ProcessGroup {
            raw,
            store,
            heartbeat,
            cfg: cfg.clone(),
            keys,
            peers,
            entered,
            failed: Mutex::new(None),
            store_gone: AtomicBool::new(false),
        })
    }

    /// Waits until every rank has registered; checks world sizes and genflow versions.
    fn rendezvous(
        store: &Store,
        keys: &Keys,
        cfg: &GroupConfig,
        where_: &str,
    ) -> Result<Vec<String>> {
        let deadline = Instant::now() + cfg.timeout;
        let mut missing: Vec<usize> = (0..cfg.world_size).collect();
        loop {
            let mut still = Vec::new();
            for &q in &missing {
                let present = store.check(&keys.join(q)).map_err(|e| {
                    Error::distributed(format!(
                        "rank {}: rendezvous store at {where_} failed while waiting for the other ranks: {}",
                        cfg.rank, e.msg
                    ))
                })?;
                if !present {
                    still.push(q);
                }
            }
            missing = still;
            if missing.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::distributed(format!(
                    "{} did not join the group at {where_} within {} (rank {} of {} waited): start every rank with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE={}",
                    list(&missing),
                    secs(cfg.timeout),
                    cfg.rank,
                    cfg.world_size,
                    cfg.world_size
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut peers = Vec::with_capacity(cfg.world_size);
        let mut other_world = Vec::new();
        let mut other_version = Vec::new();
        for q in 0..cfg.world_size {
            let v = store.get(&keys.join(q)).map_err(|e| {
                Error::distributed(format!(
                    "rank {}: reading rank {q}'s registration failed: {}",
                    cfg.rank, e.msg
                ))
            })?;
            let v = String::from_utf8_lossy(&v).into_owned();
            let mut it = v.splitn(4, ' ');
            let (world, pid, version, host) = (
                it.next().unwrap_or(""),
                it.next().unwrap_or("?"),
                it.next().unwrap_or("?"),
                it.next().unwrap_or("?"),
            );
            if world != cfg.world_size.to_string() {
                other_world.push(format!("rank {q} has WORLD_SIZE={world}"));
            }
            if version != env!("CARGO_PKG_VERSION") {
                other_version.push(format!("rank {q} runs genflow {version}"));
            }
            peers.push(format!("pid {pid} on {host}"));
        }
        if !other_world.is_empty() {
            return Err(Error::distributed(format!(
                "the ranks disagree on the world size: {}, rank {} has WORLD_SIZE={}; start every rank with the same WORLD_SIZE",
                other_world.join(", "),
                cfg.rank,
                cfg.world_size
            )));
        }
        if !other_version.is_empty() {
            return Err(Error::distributed(format!(
                "the ranks run different genflow versions: {}, rank {} runs {}; install the same genflow on every machine",
                other_version.join(", "),
                cfg.rank,
                env!("CARGO_PKG_VERSION")
            )));
        }
        Ok(peers)
    }

    /// This process's rank, 0..world_size.
    pub fn rank(&self) -> usize {
        self.cfg.rank
    }

    /// The number of ranks in the group.
    pub fn world_size(&self) -> usize {
        self.cfg.world_size
    }

    /// This process's rank on its machine (its CUDA device under NCCL).
    pub fn local_rank(&self) -> usize {
        self.cfg.local_rank
    }

    /// Whether this is rank 0 (the rank that writes checkpoints, metrics and reports).
    pub fn is_main(&self) -> bool {
        self.cfg.rank == 0
    }

    /// The backend (Gloo or NCCL).
    pub fn backend(&self) -> Backend {
        self.cfg.backend
    }

    /// How long each collective waits before it fails.
    pub fn timeout(&self) -> Duration {
        self.cfg.timeout
    }

    /// The device this group's tensors live on: CPU for Gloo, `cuda:<local rank>` for NCCL.
    pub fn device(&self) -> Device {
        match self.cfg.backend {
            Backend::Gloo => Device::Cpu,
            Backend::Nccl => Device::Cuda(self.cfg.local_rank),
        }
    }

    /// Runs one collective: refuses after an earlier failure, counts it (peers see the count in
    /// this rank's heartbeat), and turns a communication failure into a diagnosis.
    fn collective(
        &self,
        op: &str,
        f: impl FnOnce(*mut ffi::RawGroup, *mut *mut c_char) -> c_int,
    ) -> Result<()> {
        if let Some(first) = self
            .failed
            .lock()
            .map_err(|_| Error::distributed("process group state poisoned"))?
            .as_ref()
        {
            return Err(Error::distributed(format!(
                "{op} refused on rank {}: the process group failed earlier ({first})",
                self.cfg.rank
            )));
        }
        let n = self.entered.fetch_add(1, Ordering::SeqCst) + 1;
        match call(|err| f(self.raw.as_ptr(), err)) {
            Ok(()) => Ok(()),
            Err(e) if e.code == ffi::GF_EINVAL => {
                // Nothing was sent: the peers will wait in this collective and time out.
                self.entered.fetch_sub(1, Ordering::SeqCst);
                Err(Error::distributed(format!(
                    "{op} on rank {}: {}",
                    self.cfg.rank, e.msg
                )))
            }
            Err(e) => {
                let report = self.diagnose(op, n, &e.msg);
                if let Ok(mut f) = self.failed.lock() {
                    *f = Some(report.clone());
                }
                Err(Error::distributed(report))
            }
        }
    }

    /// Reads every peer's heartbeat and state; Err when the store does not answer.
    fn read_peers(&self) -> std::result::Result<Vec<PeerView>, ShimError> {
        let mut views = Vec::with_capacity(self.cfg.world_size);
        for q in 0..self.cfg.world_size {
            let mut view = PeerView {
                beat: None,
                entered: None,
                state: None,
            };
            if q != self.cfg.rank {
                if self.store.check(&self.keys.hb(q))? {
                    let v =
                        String::from_utf8_lossy(&self.store.get(&self.keys.hb(q))?).into_owned();
                    let mut it = v.split(' ').map(|x| x.parse::<u64>().ok());
                    view.beat = it.next().flatten();
                    view.entered = it.next().flatten();
                }
                if self.store.check(&self.keys.state(q))? {
                    view.state = Some(
                        String::from_utf8_lossy(&self.store.get(&self.keys.state(q))?).into_owned(),
                    );
                }
            }
            views.push(view);
        }
        Ok(views)
    }

    /// Explains a failed collective: which peers stopped, left, or did not reach it.
    fn diagnose(&self, op: &str, n: u64, c10d_msg: &str) -> String {
        let me = self.cfg.rank;
        let head = format!("{op} (collective #{n}) failed on rank {me}");
        let _ = self.store.set(
            &self.keys.state(me),
            format!("failed in {op} (collective #{n})").as_bytes(),
        );
        let where_ = format!("{}:{}", self.cfg.master_addr, self.cfg.master_port);
        let store_gone = |e: ShimError| {
            self.store_gone.store(true, Ordering::SeqCst);
            if self.cfg.agent_store {
                format!("{head}: the rendezvous store at {where_} no longer answers ({}); c10d: {c10d_msg}", e.msg)
            } else {
                format!(
                    "{head}: rank 0 ({}) has most likely died: the rendezvous store it hosted at {where_} no longer answers; c10d: {c10d_msg}",
                    self.peers.first().map_or("?", String::as_str)
                )
            }
        };
        let before = match self.read_peers() {
            Ok(v) => v,
            Err(e) => return store_gone(e),
        };
        std::thread::sleep(HEARTBEAT_WATCH);
        let after = match self.read_peers() {
            Ok(v) => v,
            Err(e) => return store_gone(e),
        };
        let mut culprits = Vec::new();
        let mut also_failed = Vec::new();
        for q in (0..self.cfg.world_size).filter(|&q| q != me) {
            let who = format!(
                "rank {q} ({})",
                self.peers.get(q).map_or("?", String::as_str)
            );
            let (b, a) = (&before[q], &after[q]);
            match a.state.as_deref() {
                Some("exited") => {
                    culprits.push(format!(
                        "{who} had already shut its process group down (it finished or left early)"
                    ));
                    continue;
                }
                Some(s) if s.starts_with("failed") => {
                    also_failed.push(format!("rank {q} {s}"));
                    continue;
                }
                _ => {}
            }
            if a.beat.is_none() || a.beat == b.beat {
                culprits.push(format!(
                    "{who} stopped: no heartbeat for over {} (its process died or its machine is unreachable)",
                    secs(HEARTBEAT_WATCH)
                ));
            } else if let Some(m) = a.entered {
                if m < n {
                    culprits.push(format!(
                        "{who} is alive but has not reached this collective (it entered {m} of {n}): it is hung or slow, or runs different code"
                    ));
                } else if m > n {
                    culprits.push(format!(
                        "{who} is past this collective (it entered {m}, this rank {n}): the ranks ran different sequences of collectives"
                    ));
                }
            }
        }
        let mut msg = head;
        if culprits.is_empty() {
            if also_failed.is_empty() {
                msg.push_str(": every other rank is alive and reached this collective");
            } else {
                let _ = write!(msg, ": {}", also_failed.join("; "));
            }
        } else {
            let _ = write!(msg, ": {}", culprits.join("; "));
        }
        let _ = write!(msg, "; c10d: {c10d_msg}");
        msg
    }

    fn pointers(tensors: &mut [Tensor]) -> Vec<*mut C_tensor> {
        tensors.iter_mut().map(|t| t.as_mut_ptr()).collect()
    }

    /// Reduces `tensors` in place across the ranks (sum, or average for floating-point tensors).
    ///
    /// The tensors are flattened into one buffer per dtype and one collective reduces each buffer,
    /// so many small tensors cost about as much as one large one.
    pub fn all_reduce(&self, tensors: &mut [Tensor], op: ReduceOp) -> Result<()> {
        self.all_reduce_bucketed(tensors, op, 0)
    }

    /// [`all_reduce`](Self::all_reduce) with buffers of at most `bucket_bytes` (0: one buffer per
    /// dtype). All buckets' collectives run concurrently.
    pub fn all_reduce_bucketed(
        &self,
        tensors: &mut [Tensor],
        op: ReduceOp,
        bucket_bytes: usize,
    ) -> Result<()> {
        let ptrs = Self::pointers(tensors);
        let c_op = match op {
            ReduceOp::Sum => ffi::GF_REDUCE_SUM,
            ReduceOp::Average => ffi::GF_REDUCE_AVG,
        };
        self.collective("all_reduce", |g, err| unsafe {
            ffi::gf_all_reduce(g, ptrs.as_ptr(), ptrs.len(), c_op, bucket_bytes, err)
        })
    }

    /// Overwrites `tensors` on every rank with rank `root`'s values (coalesced per dtype).
    pub fn broadcast(&self, tensors: &mut [Tensor], root: usize) -> Result<()> {
        let root = c_int::try_from(root)
            .ok()
            .filter(|&r| (r as usize) < self.cfg.world_size)
            .ok_or_else(|| {
                Error::distributed(format!(
                    "broadcast root {root} is outside 0..{}",
                    self.cfg.world_size.saturating_sub(1)
                ))
            })?;
        let ptrs = Self::pointers(tensors);
        self.collective("broadcast", |g, err| unsafe {
            ffi::gf_broadcast(g, ptrs.as_ptr(), ptrs.len(), root, err)
        })
    }

    /// Every rank's `tensor` (same shape and dtype on every rank), in rank order.
    pub fn all_gather(&self, tensor: &Tensor) -> Result<Vec<Tensor>> {
        let mut out: Vec<*mut C_tensor> = vec![null_mut(); self.cfg.world_size];
        self.collective("all_gather", |g, err| unsafe {
            ffi::gf_all_gather(g, tensor.as_ptr(), out.as_mut_ptr(), err)
        })?;
        // SAFETY: on success the shim filled every entry with a new at::Tensor the caller owns.
        Ok(out
            .into_iter()
            .map(|p| unsafe { Tensor::from_ptr(p) })
            .collect())
    }

    /// Waits until every rank has reached the barrier.
    pub fn barrier(&self) -> Result<()> {
        self.collective("barrier", |g, err| unsafe { ffi::gf_barrier(g, err) })
    }

    /// Reduces a few numbers (e.g. a loss sum and a sample count for logging) across the ranks, in
    /// f64, in one collective.
    pub fn all_reduce_scalars(&self, values: &[f64], op: ReduceOp) -> Result<Vec<f64>> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let mut t = [Tensor::f_from_slice(values)?.f_to_device(self.device())?];
        self.all_reduce(&mut t, op)?;
        Ok(Vec::<f64>::try_from(t[0].f_to_device(Device::Cpu)?)?)
    }

    /// The store's variables, sorted by name (the same order on every rank).
    fn sorted_variables(vs: &VarStore) -> Vec<(String, Tensor)> {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// Averages the gradients of `vs`'s trainable variables across the ranks, in buckets of at
    /// most 25 MiB ([`DEFAULT_BUCKET_BYTES`]); call it after `backward` and before the optimiser
    /// step. See [`average_gradients_bucketed`](Self::average_gradients_bucketed).
    pub fn average_gradients(&self, vs: &VarStore) -> Result<()> {
        self.average_gradients_bucketed(vs, DEFAULT_BUCKET_BYTES)
    }

    /// Averages the gradients of `vs`'s trainable variables across the ranks, in buckets of at most
    /// `bucket_bytes` (0: one per dtype), all reduced concurrently.
    ///
    /// A variable without a gradient on some rank counts as a zero gradient there; it gets the
    /// average as its gradient when at least one rank had one, and stays without a gradient when
    /// no rank had one (so the optimiser treats it the same on every rank, and as one process
    /// would).
    pub fn average_gradients_bucketed(&self, vs: &VarStore, bucket_bytes: usize) -> Result<()> {
        let vars: Vec<(String, Tensor)> = Self::sorted_variables(vs)
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        let Some((_, first)) = vars.first() else {
            return Ok(());
        };
        let flag_kind = match first.kind() {
            k @ (Kind::Half | Kind::BFloat16 | Kind::Float | Kind::Double) => k,
            _ => Kind::Float,
        };
        let device = first.device();
        let mut flags = Vec::with_capacity(vars.len());
        let mut grads = Vec::with_capacity(vars.len() + 1);
        for (_, v) in &vars {
            let g = v.f_grad()?;
            if g.defined() {
                flags.push(1.0f64);
                grads.push(g);
            } else {
                flags.push(0.0);
                grads.push(v.f_zeros_like()?.f_detach()?);
            }
        }
        grads.push(
            Tensor::f_from_slice(&flags)?
                .f_to_kind(flag_kind)?
                .f_to_device(device)?,
        );
        self.all_reduce_bucketed(&mut grads, ReduceOp::Average, bucket_bytes)?;
        let Some(flag_tensor) = grads.last() else {
            return Ok(());
        };
        let had: Vec<f64> = Vec::<f64>::try_from(
            flag_tensor
                .f_to_kind(Kind::Double)?
                .f_to_device(Device::Cpu)?,
        )?;
        for (i, ((_, var), grad)) in vars.iter().zip(&grads).enumerate() {
            if flags[i] == 0.0 && had.get(i).copied().unwrap_or(0.0) > 0.0 {
                let mut var = var.shallow_clone();
                call(|err| unsafe { ffi::gf_set_grad(var.as_mut_ptr(), grad.as_ptr(), err) })
                    .map_err(|e| {
                        Error::distributed(format!("setting an averaged gradient: {}", e.msg))
                    })?;
            }
        }
        Ok(())
    }

    /// Copies every variable of `vs` (parameters and buffers) from rank 0 to the other ranks, so
    /// that all ranks start from the same state.
    pub fn broadcast_store(&self, vs: &VarStore) -> Result<()> {
        let mut tensors: Vec<Tensor> = Self::sorted_variables(vs)
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        if tensors.is_empty() {
            return Ok(());
        }
        self.broadcast(&mut tensors, 0)
    }

    /// Checks that every rank passes the same `bytes` (e.g. the configuration text); the error
    /// names the ranks whose `label` differs from rank 0's, on every rank.
    pub fn check_same(&self, label: &str, bytes: &[u8]) -> Result<()> {
        let digest = Sha256::digest(bytes);
        let t = Tensor::f_from_slice(digest.as_slice())?.f_to_device(self.device())?;
        let all = self.all_gather(&t)?;
        let mut hashes = Vec::with_capacity(all.len());
        for h in &all {
            hashes.push(Vec::<u8>::try_from(h.f_to_device(Device::Cpu)?)?);
        }
        let hex = |h: &[u8]| {
            h.iter().take(6).fold(String::new(), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
        };
        let differing: Vec<usize> = (1..hashes.len())
            .filter(|&q| hashes[q] != hashes[0])
            .collect();
        if differing.is_empty() {
            return Ok(());
        }
        let detail: Vec<String> = differing
            .iter()
            .map(|&q| format!("rank {q} has {}", hex(&hashes[q])))
            .collect();
        Err(Error::distributed(format!(
            "the {label} differs between ranks: {} (sha256 prefixes), rank 0 has {}; start every rank with the same {label}",
            detail.join(", "),
            hex(&hashes[0])
        )))
    }
}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessGroup")
            .field("rank", &self.cfg.rank)
            .field("world_size", &self.cfg.world_size)
            .field("local_rank", &self.cfg.local_rank)
            .field("backend", &self.cfg.backend)
            .field(
                "master",
                &format!("{}:{}", self.cfg.master_addr, self.cfg.master_port),
            )
            .field("timeout", &self.cfg.timeout)
            .finish_non_exhaustive()
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let failed = self.failed.lock().map(|f| f.is_some()).unwrap_or(true);
        if let Some(mut hb) = self.heartbeat.take() {
            hb.stop();
        }
        let store_ok = !self.store_gone.load(Ordering::SeqCst);
        if store_ok {
            let _ = self.store.set(&self.keys.state(self.cfg.rank), b"exited");
            let _ = self.store.add(&self.keys.exited(), 1);
        }
        // SAFETY: raw came from gf_group_new_* and is freed only here.
        unsafe { ffi::gf_group_free(self.raw.as_ptr(), c_int::from(failed)) };
        // The store's server lives in rank 0's process: before it goes, rank 0 waits (up to the
        // timeout) until every other rank has left or stopped beating, so their last store calls
        // do not fail.
        if store_ok && self.cfg.rank == 0 && !self.cfg.agent_store && self.cfg.world_size > 1 {
            let deadline = Instant::now() + self.cfg.timeout;
            let mut last_beats: Vec<(Option<u64>, Instant)> =
                vec![(None, Instant::now()); self.cfg.world_size];
            while Instant::now() < deadline {
                match self.store.add(&self.keys.exited(), 0) {
                    Ok(n) if n >= self.cfg.world_size as i64 => break,
                    Ok(_) => {}
                    Err(_) => break,
                }
                // Ranks that stopped beating will never check out.
                let Ok(views) = self.read_peers() else { break };
                let now = Instant::now();
                let mut waiting = false;
                for (q, v) in views.iter().enumerate().skip(1) {
                    if v.state.as_deref() == Some("exited") {
                        continue;
                    }
                    if v.beat != last_beats[q].0 {
                        last_beats[q] = (v.beat, now);
                    }
                    if now.duration_since(last_beats[q].1) < HEARTBEAT_WATCH {
                        waiting = true;
                    }
                }
                if !waiting {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
