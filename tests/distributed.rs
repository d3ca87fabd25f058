//! Real multi-process runs of `genflow::distributed` over Gloo on localhost.
//!
//! How ranks are spawned: a test that needs ranks re-executes this test binary through
//! `launch_local_with` (the library's own launcher, so it is tested too) with
//! `--exact <its own name>` and `GENFLOW_DIST_TEST_ROLE` set; in those child processes the same
//! test function sees the variable and runs the rank's part (`worker_*`) instead of the
//! coordinator's. Each launch gets a free port; ranks write what the coordinator checks to files
//! in a temporary folder (`GENFLOW_DIST_TEST_OUT`).
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use genflow::distributed::launch::{launch_local_with, LaunchOptions, LaunchReport};
use genflow::distributed::{Backend, GroupConfig, ProcessGroup, ReduceOp};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

const ROLE: &str = "GENFLOW_DIST_TEST_ROLE";
const OUT: &str = "GENFLOW_DIST_TEST_OUT";

/// True in a rank process started by `spawn`.
fn is_worker() -> bool {
    std::env::var_os(ROLE).is_some()
}

fn out_dir() -> PathBuf {
    PathBuf::from(std::env::var_os(OUT).expect("GENFLOW_DIST_TEST_OUT"))
}

/// Writes `text` to `<out>/<name>` (rank processes report through files).
fn record(name: &str, text: &str) {
    std::fs::write(out_dir().join(name), text).expect("write result");
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|_| panic!("rank output {name} missing"))
}

/// Starts `nproc` ranks that run test `test` (this binary, `--exact test`), waits for them.
fn spawn(test: &str, nproc: usize, grace: Duration) -> (LaunchReport, tempfile::TempDir, Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current_exe");
    let args = [
        "--exact",
        test,
        "--nocapture",
        "--quiet",
        "--test-threads=1",
    ];
    let mut opts = LaunchOptions::new(nproc, exe, &args);
    opts.grace = grace;
    opts.kill_after = Duration::from_secs(2);
    opts.env.push((OsString::from(ROLE), OsString::from(test)));
    opts.env
        .push((OsString::from(OUT), dir.path().as_os_str().to_os_string()));
    opts.env
        .push((OsString::from("OMP_NUM_THREADS"), OsString::from("1")));
    let start = Instant::now();
    let report = launch_local_with(&opts).expect("launch");
    (report, dir, start.elapsed())
}

fn group(timeout: Duration) -> ProcessGroup {
    let mut cfg = GroupConfig::from_env().expect("rank environment");
    cfg.timeout = timeout;
    ProcessGroup::with_config(&cfg).expect("join group")
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).reshape([-1])).expect("values")
}

fn assert_ok(report: &LaunchReport) {
    assert!(
        report.failure.is_none(),
        "a rank failed: {}",
        report.summary()
    );
}

// ---------------------------------------------------------------------------------------------

/// The tensors rank `r` contributes: several dtypes, shapes, a scalar and a non-contiguous view.
fn contributions(r: f64) -> Vec<Tensor> {
    vec![
        Tensor::arange(6, (Kind::Float, Device::Cpu)).reshape([2, 3]) * (r + 1.0),
        Tensor::from_slice(&[0.5 + r, -1.25 * r, 3.0, 1e-3 * r, 7.0 + r]),
        Tensor::from_slice(&[10 * r as i64, 1, -2, 3 + r as i64]),
        Tensor::from_slice(&[r as f32 * 0.25]).squeeze(),
        (Tensor::arange(6, (Kind::Float, Device::Cpu)) + r)
            .reshape([3, 2])
            .tr(),
        Tensor::from_slice(&[1u8 + r as u8, 2, 250]),
        Tensor::from_slice(&[-(r as i32), 5]),
    ]
}

fn worker_collectives() {
    let pg = group(Duration::from_secs(20));
    let r = pg.rank();
    assert_eq!(
        (pg.world_size(), pg.local_rank(), pg.backend()),
        (2, r, Backend::Gloo)
    );
    let expected_sum: Vec<Vec<f64>> = contributions(0.0)
        .iter()
        .zip(contributions(1.0).iter())
        .map(|(a, b)| values(&(a + b)))
        .collect();

    // Sum over all dtypes at once, in one call (one buffer per dtype).
    let mut ts = contributions(r as f64);
    pg.all_reduce(&mut ts, ReduceOp::Sum).unwrap();
    for (i, (t, e)) in ts.iter().zip(&expected_sum).enumerate() {
        assert_eq!(&values(t), e, "sum of tensor {i}");
    }
    assert_eq!(ts[2].kind(), Kind::Int64);
    assert_eq!(ts[4].size(), vec![2, 3]);
    // u8 wraps around: 250 + 250 = 500 - 256.
    assert_eq!(values(&ts[5]), vec![3.0, 4.0, 244.0]);

    // Average of the floating-point ones, with buckets capped at 16 bytes (several buffers).
    let mut fs: Vec<Tensor> = contributions(r as f64)
        .into_iter()
        .filter(|t| matches!(t.kind(), Kind::Float | Kind::Double))
        .collect();
    let float_expected: Vec<Vec<f64>> = [0, 1, 3, 4]
        .iter()
        .map(|&i| expected_sum[i].iter().map(|v| v / 2.0).collect())
        .collect();
    pg.all_reduce_bucketed(&mut fs, ReduceOp::Average, 16)
        .unwrap();
    for (i, (t, e)) in fs.iter().zip(&float_expected).enumerate() {
        assert_eq!(&values(t), e, "average of float tensor {i}");
    }

    // One large contiguous tensor (reduced in place).
    let mut big = [Tensor::full(
        [100_000],
        1.5 + r as f64,
        (Kind::Double, Device::Cpu),
    )];
    pg.all_reduce(&mut big, ReduceOp::Average).unwrap();
    assert_eq!(big[0].min().double_value(&[]), 2.0);
    assert_eq!(big[0].max().double_value(&[]), 2.0);

    // The average of integers is refused on both ranks (nothing is sent), and the group goes on.
    let mut ints = [Tensor::from_slice(&[1i64, 2])];
    let err = pg
        .all_reduce(&mut ints, ReduceOp::Average)
        .unwrap_err()
        .to_string();
    assert!(err.contains("floating-point"), "{err}");

    // Broadcast from rank 1.
    let mut bs = contributions(r as f64);
    pg.broadcast(&mut bs, 1).unwrap();
    for (t, e) in bs.iter().zip(contributions(1.0).iter()) {
        assert_eq!(values(t), values(e));
    }
    let err = pg.broadcast(&mut bs, 2).unwrap_err().to_string();
    assert!(err.contains("root 2"), "{err}");

    // All-gather.
    let mine = Tensor::from_slice(&[r as i64, 10 * r as i64 + 1]);
    let all = pg.all_gather(&mine).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(values(&all[0]), vec![0.0, 1.0]);
    assert_eq!(values(&all[1]), vec![1.0, 11.0]);

    pg.barrier().unwrap();
    pg.check_same("configuration", b"lr = 0.1").unwrap();
    let sums = pg
        .all_reduce_scalars(&[1.5 + r as f64, 64.0], ReduceOp::Sum)
        .unwrap();
    assert_eq!(sums, vec![4.0, 128.0]);
    assert!(format!("{pg:?}").contains("rank: "), "{pg:?}");
    record(&format!("rank{r}"), "ok");
}

#[test]
fn collectives_on_two_ranks_give_exact_values() {
    if is_worker() {
        return worker_collectives();
    }
    let (report, dir, _) = spawn(
        "collectives_on_two_ranks_give_exact_values",
        2,
        Duration::from_secs(5),
    );
    assert_ok(&report);
    assert_eq!(read(dir.path(), "rank0"), "ok");
    assert_eq!(read(dir.path(), "rank1"), "ok");
}

// ---------------------------------------------------------------------------------------------

const BATCH: usize = 8;

fn batch() -> (Tensor, Tensor) {
    let x: Vec<f64> = (0..BATCH * 3)
        .map(|k| ((k / 3) as f64 * 1.3 + (k % 3) as f64 * 0.7).sin())
        .collect();
    let t: Vec<f64> = (0..BATCH * 2)
        .map(|k| ((k / 2) as f64 * 0.5 - (k % 2) as f64).cos())
        .collect();
    (
        Tensor::from_slice(&x).reshape([BATCH as i64, 3]),
        Tensor::from_slice(&t).reshape([BATCH as i64, 2]),
    )
}

/// A two-layer net in f64 whose initial values depend on `seed`; `running` is a buffer.
fn model(seed: f64) -> VarStore {
    let vs = VarStore::new(Device::Cpu);
    let root = vs.root();
    let init = |n: i64, k: f64| {
        let v: Vec<f64> = (0..n)
            .map(|i| ((i as f64 + 1.0) * (0.37 + k) + seed).sin() * 0.5)
            .collect();
        Tensor::from_slice(&v)
    };
    let _ = root.var_copy("w1", &init(15, 0.1).reshape([3, 5]));
    let _ = root.var_copy("b1", &init(5, 0.2));
    let _ = root.var_copy("w2", &init(10, 0.3).reshape([5, 2]));
    let _ = root.var_copy("extra", &init(2, 0.4));
    let _ = root.var_copy("unused", &init(4, 0.5));
    let mut running = root.zeros_no_train("running", &[3]);
    tch::no_grad(|| running.copy_(&init(3, 0.6)));
    let mut vs = vs;
    vs.set_kind(Kind::Double);
    vs
}

fn var(vs: &VarStore, name: &str) -> Tensor {
    vs.variables()
        .remove(name)
        .unwrap_or_else(|| panic!("no variable {name}"))
}

/// Mean squared error of the net on (x, t), plus `extra_weight` * 0.25 * |extra|^2.
fn loss(vs: &VarStore, x: &Tensor, t: &Tensor, extra_weight: f64) -> Tensor {
    let h = (x.matmul(&var(vs, "w1")) + var(vs, "b1")).tanh();
    let y = h.matmul(&var(vs, "w2"));
    let mut l = (y - t).square().mean(Kind::Double);
    if extra_weight != 0.0 {
        l += var(vs, "extra").square().sum(Kind::Double) * (0.25 * extra_weight);
    }
    l
}

fn worker_gradients() {
    let pg = group(Duration::from_secs(20));
    let r = pg.rank();
    // Different initial values on each rank; broadcast_store makes them rank 0's.
    let vs = model(r as f64 * 10.0);
    pg.broadcast_store(&vs).unwrap();
    let reference = model(0.0);
    for (name, t) in reference.variables() {
        assert_eq!(
            values(&var(&vs, &name)),
            values(&t),
            "{name} after broadcast_store"
        );
    }

    // Each rank: its half of the batch; `extra` gets a gradient on rank 0 only.
    let (x, t) = batch();
    let half = (BATCH / 2) as i64;
    let (xs, ts) = (
        x.narrow(0, r as i64 * half, half),
        t.narrow(0, r as i64 * half, half),
    );
    loss(&vs, &xs, &ts, if r == 0 { 1.0 } else { 0.0 }).backward();
    assert_eq!(var(&vs, "extra").grad().defined(), r == 0);
    pg.average_gradients(&vs).unwrap();

    // One process, the whole batch: the average of the two ranks' losses.
    loss(&reference, &x, &t, 0.5).backward();
    for name in ["w1", "b1", "w2", "extra"] {
        let (g, e) = (var(&vs, name).grad(), var(&reference, name).grad());
        let diff = (&g - &e).abs().max().double_value(&[]);
        assert!(
            diff <= 1e-12,
            "{name}: |distributed - one process| = {diff:e}"
        );
        assert!(
            e.abs().max().double_value(&[]) > 1e-3,
            "{name}: gradient is trivially small"
        );
    }
    assert!(
        !var(&vs, "unused").grad().defined(),
        "a variable no rank used keeps no gradient"
    );

    // Buckets capped at 64 bytes give the same averages.
    for (_, v) in vs.variables() {
        let mut g = v.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
    loss(&vs, &xs, &ts, if r == 0 { 1.0 } else { 0.0 }).backward();
    pg.average_gradients_bucketed(&vs, 64).unwrap();
    for name in ["w1", "b1", "w2", "extra"] {
        let (g, e) = (var(&vs, name).grad(), var(&reference, name).grad());
        let diff = (&g - &e).abs().max().double_value(&[]);
        assert!(diff <= 1e-12, "{name} (64-byte buckets): {diff:e}");
    }
    record(&format!("rank{r}"), "ok");
}

#[test]
fn average_gradients_on_two_ranks_equal_one_process() {
    if is_worker() {
        return worker_gradients();
    }
    let (report, dir, _) = spawn(
        "average_gradients_on_two_ranks_equal_one_process",
        2,
        Duration::from_secs(5),
    );
    assert_ok(&report);
    assert_eq!(read(dir.path(), "rank0"), "ok");
    assert_eq!(read(dir.path(), "rank1"), "ok");
}

// ---------------------------------------------------------------------------------------------

const SHORT: Duration = Duration::from_secs(6);

fn worker_dead_peer() {
    let pg = group(SHORT);
    pg.barrier().unwrap();
    if pg.rank() == 1 {
        // Leaves without shutting anything down, as a crash would.
        std::process::exit(3);
    }
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let mut t = [Tensor::ones([1000], (Kind::Float, Device::Cpu))];
    let err = pg
        .all_reduce(&mut t, ReduceOp::Sum)
        .unwrap_err()
        .to_string();
    let took = start.elapsed();
    let again = pg.barrier().unwrap_err().to_string();
    record("rank0", &format!("{took:?}\n{err}\n{again}"));
}

#[test]
fn a_rank_that_dies_is_named_by_the_other_within_the_timeout() {
    if is_worker() {
        return worker_dead_peer();
    }
    let test = "a_rank_that_dies_is_named_by_the_other_within_the_timeout";
    let (report, dir, elapsed) = spawn(test, 2, Duration::from_secs(20));
    let failure = report.failure.as_ref().expect("rank 1 fails");
    assert_eq!(
        (failure.rank, failure.status.code()),
        (1, Some(3)),
        "{}",
        report.summary()
    );
    assert!(
        report.statuses[0].success(),
        "rank 0 reports the failure and exits cleanly"
    );
    assert!(report.terminated.is_empty());
    let out = read(dir.path(), "rank0");
    let mut lines = out.lines();
    let took = lines.next().unwrap_or_default();
    let err = lines.next().unwrap_or_default();
    let again = lines.next().unwrap_or_default();
    eprintln!("rank 0 after {took}: {err}\nthen: {again}");
    assert!(
        err.contains("all_reduce (collective #2) failed on rank 0"),
        "{err}"
    );
    assert!(
        err.contains("rank 1 (pid") && err.contains("stopped"),
        "{err}"
    );
    assert!(again.contains("failed earlier"), "{again}");
    assert!(
        elapsed < SHORT + Duration::from_secs(10),
        "{took} / {elapsed:?}"
    );
}

fn worker_dead_store_host() {
    let pg = group(SHORT);
    pg.barrier().unwrap();
    if pg.rank() == 0 {
        std::process::exit(4);
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut t = [Tensor::ones([1000], (Kind::Float, Device::Cpu))];
    let err = pg
        .all_reduce(&mut t, ReduceOp::Sum)
        .unwrap_err()
        .to_string();
    record("rank1", &err);
}

#[test]
fn the_death_of_rank_0_which_hosts_the_store_is_named() {
    if is_worker() {
        return worker_dead_store_host();
    }
    let (report, dir, _) = spawn(
        "the_death_of_rank_0_which_hosts_the_store_is_named",
        2,
        Duration::from_secs(20),
    );
    let failure = report.failure.as_ref().expect("rank 0 fails");
    assert_eq!((failure.rank, failure.status.code()), (0, Some(4)));
    assert!(report.statuses[1].success());
    let err = read(dir.path(), "rank1");
    eprintln!("rank 1: {err}");
    assert!(err.contains("failed on rank 1: rank 0 (pid"), "{err}");
    assert!(err.contains("died"), "{err}");
}

fn worker_hung_peer() {
    let pg = group(Duration::from_secs(3));
    pg.barrier().unwrap();
    if pg.rank() == 1 {
        // Alive (heartbeating) but not taking part, past rank 0's timeout.
        std::thread::sleep(Duration::from_secs(7));
        return;
    }
    let start = Instant::now();
    let mut t = [Tensor::ones([10], (Kind::Float, Device::Cpu))];
    let err = pg
        .all_reduce(&mut t, ReduceOp::Sum)
        .unwrap_err()
        .to_string();
    record(
        "rank0",
        &format!("{:.1}\n{err}", start.elapsed().as_secs_f64()),
    );
}

#[test]
fn a_hung_rank_is_named_after_the_timeout() {
    if is_worker() {
        return worker_hung_peer();
    }
    let (report, dir, _) = spawn(
        "a_hung_rank_is_named_after_the_timeout",
        2,
        Duration::from_secs(20),
    );
    assert_ok(&report);
    let out = read(dir.path(), "rank0");
    let (took, err) = out.split_once('\n').unwrap_or_default();
    let took: f64 = took.parse().unwrap_or(f64::NAN);
    eprintln!("rank 0 after {took} s: {err}");
    assert!((2.5..9.0).contains(&took), "failed after {took} s: {err}");
    assert!(
        err.contains("rank 1 (pid") && err.contains("alive but has not reached"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------

fn worker_check_same() {
    let pg = group(Duration::from_secs(20));
    let config = format!("lr = 0.{}", pg.rank());
    let err = pg
        .check_same("configuration", config.as_bytes())
        .unwrap_err()
        .to_string();
    record(&format!("rank{}", pg.rank()), &err);
    // The group itself is fine: the ranks can agree to stop.
    pg.barrier().unwrap();
}

#[test]
fn ranks_with_different_configurations_refuse_to_start() {
    if is_worker() {
        return worker_check_same();
    }
    let (report, dir, _) = spawn(
        "ranks_with_different_configurations_refuse_to_start",
        2,
        Duration::from_secs(5),
    );
    assert_ok(&report);
    for r in 0..2 {
        let err = read(dir.path(), &format!("rank{r}"));
        eprintln!("rank {r}: {err}");
        assert!(
            err.contains("the configuration differs between ranks: rank 1 has"),
            "{err}"
        );
        assert!(err.contains("rank 0 has"), "{err}");
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn a_rank_that_never_joins_is_named_at_the_rendezvous() {
    let port = genflow::distributed::launch::free_port().unwrap();
    let start = Instant::now();
    let err = ProcessGroup::new(
        0,
        2,
        "127.0.0.1",
        port,
        Backend::Gloo,
        Duration::from_secs(2),
    )
    .expect_err("rank 1 never comes")
    .to_string();
    eprintln!("{err}");
    assert!(
        err.contains("rank 1 did not join the group at 127.0.0.1:"),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
}

fn worker_killed() {
    if std::env::var("RANK").as_deref() == Ok("1") {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: test process killing itself.
        unsafe { libc::raise(libc::SIGKILL) };
    }
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn the_launcher_names_a_killed_rank_and_terminates_the_others() {
    if is_worker() {
        return worker_killed();
    }
    let (report, _dir, elapsed) = spawn(
        "the_launcher_names_a_killed_rank_and_terminates_the_others",
        2,
        Duration::from_secs(1),
    );
    let failure = report.failure.as_ref().expect("rank 1 killed");
    assert_eq!(failure.rank, 1);
    let summary = report.summary();
    eprintln!("{summary}");
    assert!(
        summary.contains("rank 1 (pid") && summary.contains("killed by signal 9 (SIGKILL"),
        "{summary}"
    );
    assert_eq!(report.terminated, vec![0], "{summary}");
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
}

#[test]
fn the_environment_is_read_like_torchrun_sets_it() {
    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }
    assert_eq!(GroupConfig::from_lookup(env(&[])).unwrap(), None);
    let full = [
        ("RANK", "3"),
        ("WORLD_SIZE", "4"),
        ("LOCAL_RANK", "1"),
        ("MASTER_ADDR", "node0"),
        ("MASTER_PORT", "29500"),
    ];
    let cfg = GroupConfig::from_lookup(env(&full)).unwrap().unwrap();
    assert_eq!(
        (cfg.rank, cfg.world_size, cfg.local_rank, cfg.master_port),
        (3, 4, 1, 29500)
    );
    assert_eq!(
        (cfg.master_addr.as_str(), cfg.backend, cfg.agent_store),
        ("node0", Backend::Gloo, false)
    );
    let no_local = GroupConfig::from_lookup(env(&[
        ("RANK", "1"),
        ("WORLD_SIZE", "2"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "1234"),
        ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ("TORCHELASTIC_RESTART_COUNT", "2"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(
        (no_local.local_rank, no_local.agent_store, no_local.attempt),
        (1, true, 2)
    );
    assert_eq!(cfg.attempt, 0);
    let cases: [(&'static [(&'static str, &'static str)], &str); 5] = [
        (
            &[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")],
            "MASTER_PORT is not set",
        ),
        (
            &[("RANK", "x"), ("WORLD_SIZE", "2")],
            "RANK=\"x\" is not a non-negative integer",
        ),
        (
            &[
                ("RANK", "2"),
                ("WORLD_SIZE", "2"),
                ("MASTER_ADDR", "h"),
                ("MASTER_PORT", "1"),
            ],
            "RANK=2 is not below WORLD_SIZE=2",
        ),
        (
            &[
                ("RANK", "0"),
                ("WORLD_SIZE", "1"),
                ("MASTER_ADDR", "h"),
                ("MASTER_PORT", "70000"),
            ],
            "MASTER_PORT=\"70000\"",
        ),
        (&[("WORLD_SIZE", "2")], "RANK is not set"),
    ];
    for (vars, want) in cases {
        let err = GroupConfig::from_lookup(env(vars)).unwrap_err().to_string();
        assert!(err.contains(want), "{err} should contain {want}");
    }
    if !Backend::Nccl.is_available() {
        let mut cfg = cfg.clone();
        cfg.backend = Backend::Nccl;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("no NCCL backend"), "{err}");
    }
}

#[test]
fn a_group_of_one_runs_every_collective() {
    let port = genflow::distributed::launch::free_port().unwrap();
    let pg = ProcessGroup::new(
        0,
        1,
        "127.0.0.1",
        port,
        Backend::Gloo,
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(pg.is_main());
    let mut ts = contributions(0.0);
    let before: Vec<Vec<f64>> = ts.iter().map(values).collect();
    pg.all_reduce(&mut ts, ReduceOp::Sum).unwrap();
    pg.broadcast(&mut ts, 0).unwrap();
    assert_eq!(ts.iter().map(values).collect::<Vec<_>>(), before);
    let all = pg.all_gather(&ts[0]).unwrap();
    assert_eq!((all.len(), values(&all[0])), (1, before[0].clone()));
    pg.barrier().unwrap();
    pg.check_same("configuration", b"x").unwrap();
    // A CPU group refuses CUDA-only and unsupported inputs with a clear message, and goes on.
    let mut b = [Tensor::from_slice(&[true, false])];
    let err = pg
        .all_reduce(&mut b, ReduceOp::Sum)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dtype Bool, which Gloo cannot reduce"),
        "{err}"
    );
    pg.barrier().unwrap();
}

/// torchrun's agent keeps its store across restarts: each attempt's keys are separate, and a rank
/// joining twice in one attempt is refused.
#[test]
fn restarts_under_an_agent_store_use_fresh_keys() {
    let port = genflow::distributed::launch::free_port().unwrap();
    let timeout = Duration::from_secs(10);
    // Plays the agent: hosts the store (as rank 0 of a group of one, attempt 0).
    let agent = ProcessGroup::new(0, 1, "127.0.0.1", port, Backend::Gloo, timeout).unwrap();
    let worker = |attempt: u32| {
        ProcessGroup::with_config(&GroupConfig {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            master_addr: "127.0.0.1".into(),
            master_port: port,
            backend: Backend::Gloo,
            timeout,
            agent_store: true,
            attempt,
        })
    };
    let first = worker(1).unwrap();
    let mut t = [Tensor::from_slice(&[2.0f64])];
    first.all_reduce(&mut t, ReduceOp::Sum).unwrap();
    drop(first);
    let err = worker(1).unwrap_err().to_string();
    assert!(
        err.contains("two processes joined the group") && err.contains("as rank 0"),
        "{err}"
    );
    let second = worker(2).unwrap();
    second.barrier().unwrap();
    drop(second);
    drop(agent);
}
