//! What users expect of the command line around a run: an existing run is never overwritten by
//! accident, `--force` starts over cleanly, Ctrl-C saves a checkpoint and exits with 130, global
//! flags go before or after the subcommand, configuration errors say file, line and column, a
//! closed pipe ends quietly, logs follow `RUST_LOG` and carry no colour codes off a terminal,
//! and sampling takes its defaults from the task.
mod common;

use common::{error_line, genflow as run, ok};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn genflow() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_genflow"));
    cmd.env("OMP_NUM_THREADS", "1");
    cmd
}

/// The error of a training that started (its log lines come first) and then failed: one line.
fn training_error(out: Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    errors[0].to_string()
}

/// A tiny toy training of `steps` steps into `dir`.
fn toy_args(dir: &Path, steps: u64) -> Vec<String> {
    let mut args: Vec<String> = ["train", "--config", "iresnet-toy", "--out"]
        .map(String::from)
        .to_vec();
    args.push(dir.display().to_string());
    for s in [
        "model.blocks=2".to_string(),
        "model.hidden=[8]".into(),
        "train.batch_size=32".into(),
        "data.test_size=64".into(),
        "train.log_every=1".into(),
        format!("train.steps={steps}"),
    ] {
        args.extend(["--set".into(), s]);
    }
    args
}

fn train_toy(dir: &Path, steps: u64, extra: &[&str]) -> Output {
    let mut args = toy_args(dir, steps);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&args)
}

fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn an_existing_run_is_refused_and_force_starts_over() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    ok(&train_toy(&dir, 6, &[]));
    let checkpoint = std::fs::read(dir.join("checkpoint.safetensors")).unwrap();
    let err = error_line(&train_toy(&dir, 3, &[]));
    assert!(
        err.contains("already holds a run") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.join("checkpoint.safetensors")).unwrap(),
        checkpoint
    );
    assert_eq!(metrics(&dir).len(), 6);

    // a file of the user's own in the folder is left alone
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    ok(&train_toy(
        &dir,
        3,
        &["--force", "--set", "data.density=checkerboard"],
    ));
    let lines = metrics(&dir);
    assert_eq!(
        lines
            .iter()
            .map(|l| l["step"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(config.contains("checkerboard"), "{config}");
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "mine"
    );

    // resuming a finished run, or with another model, is refused with the reason
    let err = error_line(&run(&["train", "--out", dir.to_str().unwrap(), "--resume"]));
    assert!(err.contains("already finished"), "{err}");
    let err = error_line(&train_toy(
        &dir,
        3,
        &["--resume", "--set", "model.blocks=3"],
    ));
    assert!(
        err.contains("data.density"),
        "the run is checkerboard: {err}"
    );
    let other_model = [
        "--resume",
        "--set",
        "data.density=checkerboard",
        "--set",
        "model.blocks=3",
    ];
    let err = error_line(&train_toy(&dir, 3, &other_model));
    assert!(
        err.contains("model.blocks") && err.contains("run: 2"),
        "{err}"
    );
    // a longer run is another run when the schedule follows the run's length
    let err = error_line(&train_toy(&dir, 9, &["--resume"]));
    assert!(err.contains("learning-rate schedule"), "{err}");
}

/// Waits until `dir/metrics.jsonl` holds at least `lines` lines (training is under way).
fn wait_for_metrics(child: &mut Child, dir: &Path, lines: usize) {
    let started = Instant::now();
    loop {
        let n = std::fs::read_to_string(dir.join("metrics.jsonl"))
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if n >= lines {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("training ended early with {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "training did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn interrupt(child: &Child) {
    // SAFETY: sending a signal to a child process we own.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0);
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_exits_130() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut args = toy_args(&dir, 1_000_000);
    args.extend(["--set".into(), "train.checkpoint_every=1000000".into()]);
    let mut child = genflow()
        .args(["--device", "cpu", "--threads", "1"])
        .args(&args)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_metrics(&mut child, &dir, 3);
    interrupt(&child);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status}");
    let (_, meta) = genflow::train::checkpoint::load(&dir.join("checkpoint.safetensors")).unwrap();
    assert!(meta.step >= 3, "checkpoint at step {}", meta.step);
    let last = metrics(&dir).pop().unwrap();
    assert_eq!(last["event"], "interrupted", "{last}");
    assert_eq!(last["step"].as_u64(), Some(meta.step));
}

#[test]
fn a_second_ctrl_c_exits_at_once_and_keeps_the_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut args = toy_args(&dir, 1_000_000);
    args.extend(["--set".into(), "train.checkpoint_every=1".into()]);
    let mut child = genflow()
        .args(["--device", "cpu", "--threads", "1"])
        .args(&args)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_metrics(&mut child, &dir, 3);
    interrupt(&child);
    interrupt(&child);
    let started = Instant::now();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // whatever step it stopped at, the checkpoint on disk is a complete one
    let (_, meta) = genflow::train::checkpoint::load(&dir.join("checkpoint.safetensors")).unwrap();
    assert!(meta.step >= 3);
}

#[test]
fn a_spent_time_budget_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let out = train_toy(&dir, 100_000, &["--set", "train.max_minutes=0.0001"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(&out);
    assert!(stderr.contains("time budget"), "{stderr}");
    let last = metrics(&dir).pop().unwrap();
    assert_eq!(last["event"], "time_budget_spent", "{last}");
}

#[test]
fn global_flags_go_before_or_after_the_subcommand() {
    let out = genflow()
        .args(["presets", "--threads", "1", "--device", "cpu"])
        .output()
        .unwrap();
    assert!(ok(&out).contains("iresnet-toy"));
    let err = error_line(
        &genflow()
            .args(["presets", "--threads", "0"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("--threads"), "{err}");
    let err = error_line(
        &genflow()
            .args(["presets", "--device", "tpu"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("unknown device"), "{err}");
}

#[test]
fn toml_errors_name_file_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("run.toml");
    std::fs::write(
        &file,
        "task = \"toy-density\"\n[data]\ndensity = \"8gaussians\"\n[model]\nblocks = \"ten\"\nhidden = [8]\n[train]\nsteps = 3\nbatch_size = 8\n",
    )
    .unwrap();
    let out_dir = tmp.path().join("run");
    let f = file.to_str().unwrap();
    let err = error_line(&run(&[
        "train",
        "--config",
        f,
        "--out",
        out_dir.to_str().unwrap(),
    ]));
    assert!(
        err.contains(&format!("{f}:5:1")) && err.contains("model.blocks"),
        "{err}"
    );
    assert!(err.contains("expected usize"), "{err}");

    std::fs::write(&file, "task = \"toy-density\"\n[data\n").unwrap();
    let err = error_line(&run(&[
        "train",
        "--config",
        f,
        "--out",
        out_dir.to_str().unwrap(),
    ]));
    assert!(err.contains(&format!("{f}:2:")), "{err}");

    // an override names the key and the expected type
    let err = error_line(&train_toy(&out_dir, 3, &["--set", "train.batch_size=big"]));
    assert!(
        err.contains("--set train.batch_size=big") && err.contains("expected i64"),
        "{err}"
    );
    assert!(!out_dir.exists());
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let mut child = genflow()
        .args(["linalg", "check", "-n", "8"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader went away, like `| head -0`
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn logs_follow_rust_log_and_carry_no_colour_off_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = toy_args(&tmp.path().join("a"), 2);
    args.splice(0..0, ["--device".into(), "cpu".into()]);
    let out = genflow().args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success() && stderr.contains("INFO"), "{stderr}");
    assert!(!stderr.contains('\x1b'), "colour codes: {stderr:?}");

    let mut args = toy_args(&tmp.path().join("b"), 2);
    args.splice(0..0, ["--device".into(), "cpu".into()]);
    let out = genflow()
        .env("RUST_LOG", "error")
        .args(&args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success() && !stderr.contains("INFO"), "{stderr}");
}

#[test]
fn samples_take_their_defaults_from_the_task_and_check_their_arguments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    ok(&train_toy(&dir, 5, &[]));
    let d = dir.to_str().unwrap();
    let csv = tmp.path().join("s.csv");
    let c = csv.to_str().unwrap();
    ok(&run(&["sample", "--run", d, "--out", c]));
    let rows = |path: &Path| std::fs::read_to_string(path).unwrap().lines().count() - 1;
    assert_eq!(
        rows(&csv),
        10_000,
        "a 2-D run draws 10000 points by default"
    );
    let first = std::fs::read_to_string(&csv).unwrap();
    ok(&run(&[
        "sample", "--run", d, "--out", c, "-n", "50", "--seed", "7",
    ]));
    assert_eq!(rows(&csv), 50);
    let seeded = std::fs::read_to_string(&csv).unwrap();
    assert_ne!(
        first.lines().nth(1),
        seeded.lines().nth(1),
        "--seed changes the draw"
    );
    // at temperature 0 every sample is f^{-1}(0)
    ok(&run(&[
        "sample",
        "--run",
        d,
        "--out",
        c,
        "-n",
        "5",
        "--temperature",
        "0",
    ]));
    let text = std::fs::read_to_string(&csv).unwrap();
    // (equal up to float rounding: a row's last bits may depend on its place in the batch)
    let points: Vec<Vec<f64>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    let same = |p: &Vec<f64>| p.iter().zip(&points[0]).all(|(a, b)| (a - b).abs() < 1e-5);
    assert!(points.len() == 5 && points.iter().all(same), "{text}");
    for n in ["0", "-1"] {
        let err = error_line(&run(&["sample", "--run", d, "--out", c, "-n", n]));
        assert!(err.contains("at least 1"), "{err}");
    }
    let err = error_line(&run(&[
        "sample",
        "--run",
        d,
        "--out",
        c,
        "--temperature",
        "-1",
    ]));
    assert!(err.contains("temperature"), "{err}");
}

#[test]
fn an_inverse_that_did_not_converge_is_reported_and_strict_makes_it_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    ok(&train_toy(&dir, 5, &[]));
    let d = dir.to_str().unwrap();
    let converged: serde_json::Value =
        serde_json::from_str(&ok(&run(&["eval", "--run", d, "--json"]))).unwrap();
    assert_eq!(converged["inverse_converged"], true, "{converged}");
    assert_eq!(converged["inverse_unconverged_points"], 0);
    // one fixed-point iteration cannot reach the tolerance
    let out = run(&[
        "eval",
        "--run",
        d,
        "--json",
        "--set",
        "eval.inverse.max_iter=1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(report["inverse_converged"], false, "{report}");
    let points = report["inverse_unconverged_points"].as_u64().unwrap();
    assert!(points > 0 && points <= 64, "{report}");
    assert!(stderr.contains("did not converge"), "{stderr}");
    let strict = [
        "eval",
        "--run",
        d,
        "--strict",
        "--set",
        "eval.inverse.max_iter=1",
    ];
    let err = error_line(&run(&strict));
    assert!(err.contains("did not converge"), "{err}");
}

#[test]
fn a_nan_stops_training_through_the_command_line_keeping_the_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    // a learning rate of 1e30 throws the weights to infinity within a few steps
    let blow_up = [
        "--set",
        "optim.lr=1e30",
        "--set",
        "train.checkpoint_every=1",
    ];
    let err = training_error(train_toy(&dir, 50, &blow_up));
    assert!(err.contains("NaN") || err.contains("infinity"), "{err}");
    assert!(err.contains("last good checkpoint (step"), "{err}");
    let (_, meta) = genflow::train::checkpoint::load(&dir.join("checkpoint.safetensors")).unwrap();
    assert!(err.contains(&format!("(step {})", meta.step)), "{err}");
    // rolling back halves the rate each time, which is no cure for 1e30: it stops after the limit
    let again = tmp.path().join("again");
    let mut args: Vec<&str> = blow_up.to_vec();
    args.extend([
        "--set",
        "train.on_nan=\"rollback\"",
        "--set",
        "train.max_rollbacks=2",
    ]);
    let err = training_error(train_toy(&again, 50, &args));
    assert!(err.contains("after 2 rollbacks"), "{err}");
    let rollbacks = metrics(&again)
        .iter()
        .filter(|l| l["event"] == "rollback")
        .count();
    assert_eq!(rollbacks, 2);
}
