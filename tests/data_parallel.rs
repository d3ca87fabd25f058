//! Data-parallel training end to end through the command line: `genflow launch --nproc 2 --
//! train ...` (two CPU processes over Gloo) against `genflow train ...` (one process), in f64.
//!
//! Two ranks with half of each global batch must leave exactly (to 1e-12) the weights, buffers
//! (spectral-norm vectors, ActNorm's initialisation, BatchNorm's running statistics), optimiser
//! state and moving averages that one process leaves with the whole batch, after one step and
//! after 20, and log the same losses; a rank that is killed is named by the other, which stops,
//! and `--resume` on two ranks then finishes the run.
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use genflow::train::checkpoint;
use tch::{Kind, Tensor};

/// The largest difference allowed between one process and two ranks (f64), relative to the
/// largest magnitude of the tensor (or absolute, below 1): BatchNorm's running means of i-ResNet
/// features are in the tens.
const TOLERANCE: f64 = 1e-12;

fn genflow() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_genflow"));
    cmd.args(["--device", "cpu", "--threads", "1"])
        .env("OMP_NUM_THREADS", "1")
        .env_remove("RANK")
        .env_remove("WORLD_SIZE");
    cmd
}

fn ok(out: Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "genflow failed:\n{text}");
    text
}

/// `genflow train` on one process, or on `nproc` ranks through `genflow launch`.
fn train(nproc: usize, args: &[String]) -> String {
    let mut cmd = genflow();
    if nproc > 1 {
        cmd.args(["launch", "--nproc", &nproc.to_string(), "--"]);
    }
    ok(cmd.arg("train").args(args).output().expect("run genflow"))
}

/// `train --config <config> --out <out>` with `--set` for every setting.
fn args(config: &str, out: &Path, settings: &[&str]) -> Vec<String> {
    let mut a = vec![
        "--config".to_string(),
        config.to_string(),
        "--out".to_string(),
        out.display().to_string(),
    ];
    for s in settings {
        a.extend(["--set".to_string(), s.to_string()]);
    }
    a
}

fn tensors(run: &Path) -> BTreeMap<String, Tensor> {
    checkpoint::load(&run.join("checkpoint.safetensors"))
        .expect("load checkpoint")
        .0
}

fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

/// Every tensor of the two checkpoints (weights, buffers, optimiser state, moving averages) and
/// every logged loss agree to [`TOLERANCE`]; returns the number of tensors compared.
fn assert_same_runs(one: &Path, two: &Path) -> usize {
    let (a, b) = (tensors(one), tensors(two));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the checkpoints hold different tensors"
    );
    for (name, x) in &a {
        let y = &b[name];
        assert_eq!((x.kind(), x.size()), (y.kind(), y.size()), "{name}");
        assert!(
            !x.is_floating_point() || x.kind() == Kind::Double,
            "{name} is not f64"
        );
        let (x, y) = (x.to_kind(Kind::Double), y.to_kind(Kind::Double));
        let diff = (&x - &y).abs().max().double_value(&[]);
        let scale = x.abs().max().double_value(&[]).max(1.0);
        assert!(
            diff <= TOLERANCE * scale,
            "{name} (largest magnitude {scale}) differs by {diff:e} between one process and two ranks"
        );
    }
    let (la, lb) = (losses(one), losses(two));
    assert_eq!(la.len(), lb.len());
    for ((sa, va), (sb, vb)) in la.iter().zip(&lb) {
        assert_eq!(sa, sb);
        assert!(
            (va - vb).abs() <= TOLERANCE * va.abs().max(1.0),
            "step {sa}: loss {va} vs {vb}"
        );
    }
    a.len()
}

/// One step, then 20 steps, of one process and of two ranks, compared.
fn one_process_equals_two_ranks(config: &str, settings: &[&str], must_hold: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    for steps in [1, 20] {
        let steps_setting = format!("train.steps={steps}");
        let mut all: Vec<&str> = vec!["dtype=\"float64\"", "train.log_every=1", &steps_setting];
        all.extend_from_slice(settings);
        let one = tmp.path().join(format!("one-{steps}"));
        let two = tmp.path().join(format!("two-{steps}"));
        train(1, &args(config, &one, &all));
        let log = train(2, &args(config, &two, &all));
        assert!(
            log.contains("data-parallel on 2 ranks (gloo)"),
            "no data-parallel run:\n{log}"
        );
        let names = tensors(&one);
        for part in must_hold {
            assert!(
                names.keys().any(|k| k.contains(part)),
                "the checkpoint holds no {part}"
            );
        }
        assert!(assert_same_runs(&one, &two) > 0);
        // Only rank 0 wrote: one metrics line per step.
        assert_eq!(losses(&two).len(), steps);
    }
}

#[test]
fn toy_flow_on_two_ranks_equals_one_process() {
    one_process_equals_two_ranks(
        "iresnet-toy",
        &[
            "model.blocks=2",
            "model.hidden=[16, 16]",
            "train.batch_size=64",
            "data.test_size=64",
        ],
        &["actnorms", "log_scale", "optim.", ".u"],
    );
}

#[test]
fn image_flow_on_two_ranks_equals_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_digits(tmp.path());
    let data = format!("data.dir=\"{}\"", tmp.path().display());
    // 100 images in batches of 32: the last batch of each epoch (4 images) is split 2 + 2, and
    // 20 steps cross five epochs. Stochastic log-det (Hutchinson probes) and dequantisation
    // noise are drawn per row.
    one_process_equals_two_ranks(
        "iresnet-digits",
        &[
            &data,
            "data.train_subset=100",
            "data.test_size=16",
            "model.scales=[1, 1]",
            "model.hidden=8",
            "train.batch_size=32",
            "train.logdet={ kind = \"series\", terms = 2 }",
            "train.ema_decay=0.9",
            "train.eval_every=10",
            "optim.schedule={ kind = \"cosine\", warmup_steps = 2 }",
        ],
        &["actnorms", "ema.", ".u", "sigma", "initialized"],
    );
}

#[test]
fn classifier_with_batch_norm_on_two_ranks_equals_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_digits(tmp.path());
    let data = format!("data.dir=\"{}\"", tmp.path().display());
    // An odd batch: the ranks hold 13 and 12 images, and BatchNorm normalises with the
    // statistics of all 25. SGD with momentum, as the official i-ResNet classifier trains: the
    // bias of the last conv before BatchNorm has an analytically zero gradient (BatchNorm removes
    // any constant per channel), and Adam would normalise its rounding residue (~1e-19 here) to
    // steps of +-lr, so the running means of two runs with different summation orders would
    // drift apart by amplified rounding noise (5e-12 after 20 steps), whatever the ranks.
    one_process_equals_two_ranks(
        "iresnet-classifier-mnist",
        &[
            &data,
            "data.dataset=\"digits\"",
            "data.train_subset=200",
            "data.test_size=20",
            "model.in_shape=[1, 8, 8]",
            "model.stages=[1, 1]",
            "model.hidden=[8, 8]",
            "train.batch_size=25",
            "train.eval_every=10",
            "optim={ kind = \"sgd\", lr = 0.05, momentum = 0.9, weight_decay = 5e-4 }",
        ],
        &["running_mean", "running_var", "actnorms"],
    );
}
