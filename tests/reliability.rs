//! Nothing lost and nothing silent: a training killed at any moment (checkpoint writes included)
//! always resumes from a checkpoint that loads and finishes bit for bit like an uninterrupted run;
//! resume is exact for image flows with a moving average and Russian-roulette log-dets too;
//! damaged, truncated, foreign or mismatched checkpoints are refused with the reason; a write
//! that fails (a full disk) stops training with a message and leaves the last good checkpoint.
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tch::Tensor;

mod common;

use common::ok;

fn genflow() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_genflow"));
    cmd.env("OMP_NUM_THREADS", "1")
        .args(["--device", "cpu", "--threads", "1"]);
    cmd
}

/// `train` arguments of a tiny toy run of `steps` steps into `dir`, checkpointing every step.
fn toy(dir: &Path, steps: u64) -> Vec<String> {
    let mut args = vec![
        "train".to_string(),
        "--config".into(),
        "iresnet-toy".into(),
        "--out".into(),
    ];
    args.push(dir.display().to_string());
    for s in [
        "model.blocks=2".to_string(),
        "model.hidden=[8]".into(),
        "train.batch_size=32".into(),
        "data.test_size=64".into(),
        "train.log_every=1".into(),
        "train.checkpoint_every=1".into(),
        // an explicit schedule length, so that the run's length may grow on resume
        "optim.schedule.total_steps=1000".into(),
        format!("train.steps={steps}"),
    ] {
        args.extend(["--set".into(), s]);
    }
    args
}

fn checkpoint(
    dir: &Path,
) -> (
    BTreeMap<String, Tensor>,
    genflow::train::checkpoint::CheckpointMeta,
) {
    genflow::train::checkpoint::load(&dir.join("checkpoint.safetensors")).unwrap()
}

fn assert_bit_identical(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>, what: &str) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{what}"
    );
    for (name, t) in a {
        assert!(t.equal(&b[name]), "{what}: {name} differs");
    }
}

fn metrics_lines(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn a_run_killed_at_random_moments_always_resumes_and_finishes_bit_for_bit() {
    const STEPS: u64 = 400;
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    ok(&genflow().args(toy(&straight, STEPS)).output().unwrap());

    let run = tmp.path().join("killed");
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let mut kills = 0;
    while kills < 32 {
        let resume = run.join("checkpoint.safetensors").exists();
        let mut args = toy(&run, STEPS);
        args.push(if resume {
            "--resume".into()
        } else {
            "--force".into()
        });
        let before = metrics_lines(&run);
        let mut child = genflow()
            .args(&args)
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // once training is under way, kill at a random moment within the next few steps
        let started = Instant::now();
        while metrics_lines(&run) <= before && child.try_wait().unwrap().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "training did not start"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..40)));
        if child.try_wait().unwrap().is_some() {
            break; // the run finished before the kill
        }
        // SAFETY: sending a signal to a child process we own.
        assert_eq!(
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) },
            0
        );
        child.wait().unwrap();
        kills += 1;
        // whatever the moment, the newest checkpoint loads
        if run.join("checkpoint.safetensors").exists() {
            let (_, meta) = checkpoint(&run);
            assert!(meta.step <= STEPS);
        }
    }
    eprintln!("killed the training {kills} times");
    assert!(
        kills >= 30,
        "only {kills} kills landed before the run finished"
    );
    let mut args = toy(&run, STEPS);
    args.push("--resume".into());
    ok(&genflow().args(&args).output().unwrap());
    let (a, meta) = checkpoint(&straight);
    let (b, meta_b) = checkpoint(&run);
    assert_eq!((meta.step, meta_b.step), (STEPS, STEPS));
    assert_bit_identical(&a, &b, "killed run vs uninterrupted run");
}

#[test]
fn an_image_flow_with_a_moving_average_and_roulette_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_digits(tmp.path());
    let data = format!("data.dir=\"{}\"", tmp.path().display());
    let train = |dir: &Path, steps: &str, extra: &[&str]| {
        let d = dir.display().to_string();
        let mut args = vec![
            "train",
            "--config",
            "iresnet-digits",
            "--out",
            &d,
            "--set",
            &data,
        ];
        for s in [
            "model.scales=[1, 1]",
            "model.hidden=8",
            "train.batch_size=32",
            "train.eval_every=2",
            "train.ema_decay=0.9",
            "train.logdet={kind=\"roulette\", n_exact=1, dist={geometric={p=0.5}}}",
            "optim.schedule.total_steps=1440",
            steps,
        ] {
            args.extend(["--set", s]);
        }
        args.extend_from_slice(extra);
        ok(&genflow().args(&args).output().unwrap());
    };
    let (straight, split) = (tmp.path().join("straight"), tmp.path().join("split"));
    train(&straight, "train.steps=6", &[]);
    train(&split, "train.steps=3", &[]);
    train(&split, "train.steps=6", &["--resume"]);
    let (a, _) = checkpoint(&straight);
    let (b, _) = checkpoint(&split);
    assert!(
        a.keys().any(|k| k.starts_with("ema.")),
        "the run keeps a moving average"
    );
    assert_bit_identical(&a, &b, "resumed image run vs uninterrupted");
}

/// The error line of a failing `eval` of `dir`.
fn eval_error(dir: &Path) -> String {
    let out = genflow()
        .args(["eval", "--samples", "0", "--run"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(!out.status.success(), "eval of a damaged run succeeded");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

#[test]
fn damaged_truncated_foreign_and_mismatched_checkpoints_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    ok(&genflow().args(toy(&dir, 3)).output().unwrap());
    let path = dir.join("checkpoint.safetensors");
    let good = std::fs::read(&path).unwrap();

    // one flipped byte in the tensor data
    let mut flipped = good.clone();
    let last = flipped.len() - 5;
    flipped[last] ^= 0x40;
    std::fs::write(&path, &flipped).unwrap();
    let err = eval_error(&dir);
    assert!(
        err.contains("checkpoint.safetensors") && err.contains("corrupt"),
        "{err}"
    );

    // cut short
    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    let err = eval_error(&dir);
    assert!(err.contains("truncated"), "{err}");

    // not a safetensors file at all
    std::fs::write(&path, b"PK\x03\x04 a zip file, say").unwrap();
    let err = eval_error(&dir);
    assert!(err.contains("not a safetensors file"), "{err}");

    // a checkpoint whose tensors belong to a larger model than its stored configuration says
    let other = tmp.path().join("bigger");
    let mut args = toy(&other, 2);
    args.extend(["--set".into(), "model.blocks=3".into()]);
    ok(&genflow().args(&args).output().unwrap());
    let (tensors, _) =
        genflow::data::tensor_file::load(&other.join("checkpoint.safetensors")).unwrap();
    let (_, metadata) = genflow::data::tensor_file::load(&{
        std::fs::write(&path, &good).unwrap();
        path.clone()
    })
    .unwrap();
    let tensors: Vec<(String, Tensor)> = tensors.into_iter().collect();
    genflow::data::tensor_file::save(&path, &tensors, metadata).unwrap();
    let err = eval_error(&dir);
    assert!(err.contains("s.2.") && err.contains("disagree"), "{err}");
}

#[test]
fn a_failed_checkpoint_write_stops_training_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    ok(&genflow().args(toy(&dir, 3)).output().unwrap());
    let (before, meta) = checkpoint(&dir);
    // a file-size limit of 4 KiB (with SIGXFSZ ignored, so the write fails with EFBIG) stands in
    // for a full disk: the next checkpoint cannot be written
    let mut args = toy(&dir, 8);
    args.push("--resume".into());
    let script = format!(
        "trap '' XFSZ; ulimit -f 4; exec \"$0\" --device cpu --threads 1 {}",
        args.iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = Command::new("bash")
        .args(["-c", &script, env!("CARGO_BIN_EXE_genflow")])
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("checkpoint.safetensors") && err.contains("cannot write"),
        "{err}"
    );
    let (after, meta_after) = checkpoint(&dir);
    assert_eq!(meta_after.step, meta.step);
    assert_bit_identical(&before, &after, "the last good checkpoint");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}
