//! Data-parallel training end to end through the command line: `genflow launch --nproc 2 --
//! train ...` (two CPU processes over Gloo) against `genflow train ...` (one process), in f64.
//!
//! Two ranks with half of each global batch must leave exactly (to 1e-12) the weights, buffers
//! (spectral-norm vectors, ActNorm's initialisation, BatchNorm's running statistics), optimiser
//! state and moving averages that one process leaves with the whole batch, after one step and
//! after 20, and log the same losses; a rank that is killed is named by the other, which stops,
//! and `--resume` on two ranks then finishes the run. The same holds for the feature network
//! (BatchNorm) and the GANs (both updates; batch normalisation in both nets); tasks that train on
//! one process only refuse to launch.
mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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
    let mut worst = (0.0f64, String::new());
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
        if diff / scale > worst.0 {
            worst = (diff / scale, name.clone());
        }
        assert!(
            diff <= TOLERANCE * scale,
            "{name} (largest magnitude {scale}) differs by {diff:e} between one process and two ranks"
        );
    }
    eprintln!(
        "{}: the largest relative difference is {:e} ({})",
        one.display(),
        worst.0,
        worst.1
    );
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
    // 101 images in batches of 32: the ranks split the last batch of each epoch (5 images) 3 + 2
    // and weight their means accordingly, and 20 steps cross five epochs. Stochastic log-det
    // (Hutchinson probes) and dequantisation noise are drawn per row.
    one_process_equals_two_ranks(
        "iresnet-digits",
        &[
            &data,
            "data.train_subset=101",
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

#[test]
fn feature_classifier_with_batch_norm_on_two_ranks_equals_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_digits(tmp.path());
    let data = format!("data.dir=\"{}\"", tmp.path().display());
    // The feature network of the sample-quality metrics: conv-BatchNorm stages, normalised with
    // the statistics of all 25 images of an odd batch (13 + 12). SGD, for the reason above (its
    // convs have biases before BatchNorm).
    one_process_equals_two_ranks(
        "features-mnist",
        &[
            &data,
            "data.dataset=\"digits\"",
            "data.train_subset=200",
            "data.test_size=20",
            "model.in_shape=[1, 8, 8]",
            "model.widths=[4, 4]",
            "model.features=8",
            "train.batch_size=25",
            "train.eval_every=10",
            "optim={ kind = \"sgd\", lr = 0.05, momentum = 0.9, weight_decay = 5e-4 }",
        ],
        &["running_mean", "running_var", "features"],
    );
}

#[test]
fn toy_gan_alternating_on_two_ranks_equals_one_process() {
    // The alternating update (a discriminator step, then a generator step against the updated
    // discriminator) on an odd batch (32 + 31 points, weighted), with batch normalisation in the
    // generator (1-d, synchronised), spectral normalisation in the discriminator and WGAN-GP's
    // per-point interpolation weights drawn for the global batch.
    one_process_equals_two_ranks(
        "gan-toy",
        &[
            "model.hidden=[16, 16]",
            "model.generator_norm=\"batch\"",
            "model.spectral_norm=true",
            "train.batch_size=63",
            "train.update=\"alternating\"",
            "train.penalty={ wgan-gp = { lambda = 1.0 } }",
            "data.test_size=200",
            "train.eval_every=10",
        ],
        &[
            "generator.",
            "discriminator.",
            ".u",
            "running_var",
            "optim.",
        ],
    );
}

#[test]
fn toy_ogan_single_loss_on_two_ranks_equals_one_process() {
    // The single-loss update of an O-GAN (the correlation term on every rank's rows), GAN-QP's
    // per-pair distances, R1, and a moving average of the generator.
    one_process_equals_two_ranks(
        "gan-toy",
        &[
            "model.hidden=[16, 16]",
            "model.encoder=true",
            "train.batch_size=64",
            "train.update=\"single-loss\"",
            "train.loss={ gan-qp = { lambda = 10.0 } }",
            "train.penalty={ r1 = { gamma = 1.0 } }",
            "train.ema_decay=0.9",
            "data.test_size=200",
            "train.eval_every=10",
        ],
        &["generator.", "discriminator.", "ema."],
    );
}

#[test]
fn image_gan_with_batch_norm_on_two_ranks_equals_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_digits(tmp.path());
    let data = format!("data.dir=\"{}\"", tmp.path().display());
    // DCGAN with batch normalisation in both nets (synchronised: every call of a net normalises
    // the global batch's rows), the alternating update, epochs of 101 images in batches of 32
    // (the last one split 3 + 2). SGD, for the reason above (convs with biases before BatchNorm).
    one_process_equals_two_ranks(
        "gan-mnist",
        &[
            &data,
            "data.dataset=\"digits\"",
            "data.train_subset=101",
            "data.test_size=16",
            "model.image_shape=[1, 8, 8]",
            "model.z_dim=8",
            "model.width=4",
            "model.levels=2",
            "train.batch_size=32",
            "optim={ kind = \"sgd\", lr = 0.05, momentum = 0.9 }",
        ],
        &[
            "generator.",
            "discriminator.",
            "running_mean",
            "running_var",
        ],
    );
}

#[test]
fn image_ogan_single_loss_on_two_ranks_equals_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_digits(tmp.path());
    let data = format!("data.dir=\"{}\"", tmp.path().display());
    // O-GAN: the single-loss update with GAN-QP and the correlation term, a generator with
    // self-modulated batch normalisation (no affine parameters of its own), a batch-normalised
    // encoder, a moving average of the generator and evaluations on the test images; 103 images
    // in batches of 25 (the last one split 2 + 1). GAN-QP with the L1 distance and a moderate
    // correlation weight: the preset's L2 distance and weight 8 give gradients large enough that
    // the rounding residue of the (analytically zero) gradient of a conv bias before BatchNorm
    // reaches 2e-12 in SGD's momentum buffer after 20 steps, in one process as on two ranks.
    one_process_equals_two_ranks(
        "ogan-mnist",
        &[
            &data,
            "data.dataset=\"digits\"",
            "data.train_subset=103",
            "data.test_size=16",
            "model.image_shape=[1, 8, 8]",
            "model.z_dim=6",
            "model.width=4",
            "model.levels=2",
            "model.generator_norm=\"self-modulated\"",
            "train.loss={ gan-qp = { lambda = 10.0 } }",
            "train.rho_weight=1.0",
            "train.batch_size=25",
            "train.eval_every=10",
            "train.ema_decay=0.9",
            "optim={ kind = \"sgd\", lr = 0.005, momentum = 0.9 }",
        ],
        &[
            "generator.",
            "discriminator.",
            "running_mean",
            "gamma",
            "ema.",
        ],
    );
}

#[test]
fn tasks_that_train_on_one_process_only_refuse_to_launch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = format!("data.dir=\"{}\"", tmp.path().display());
    let penalty = "train.penalty={ r1 = { gamma = 1.0 } }";
    let cases: [(&str, &str, &[&str]); 2] = [
        (
            "glann-mnist",
            "task glann trains on one process only",
            &[&data],
        ),
        (
            "gan-mnist",
            "task image-gan trains on one process only with a gradient penalty",
            &[&data, penalty],
        ),
    ];
    for (config, expected, settings) in cases {
        let run = tmp.path().join(config);
        let started = Instant::now();
        let out = genflow()
            .env("GENFLOW_DIST_TIMEOUT", "60")
            .args(["launch", "--nproc", "2", "--", "train"])
            .args(args(config, &run, settings))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{config} trained on two ranks:\n{err}"
        );
        let line = err
            .lines()
            .find(|l| l.contains(expected))
            .unwrap_or_else(|| panic!("{config}: no refusal naming the task:\n{err}"));
        assert!(line.contains("genflow launch"), "{line}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{config}: the refusal took {:?}",
            started.elapsed()
        );
        assert!(
            !run.exists(),
            "{config}: the refusal touched the run folder"
        );
    }
}

/// The pids of `parent`'s child processes.
fn children(parent: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{parent}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            pids.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    pids
}

/// The process among `pids` whose environment has `RANK=<rank>`.
fn rank_pid(pids: &[u32], rank: usize) -> Option<u32> {
    let want = format!("RANK={rank}");
    pids.iter().copied().find(|pid| {
        std::fs::read(format!("/proc/{pid}/environ"))
            .map(|env| env.split(|&b| b == 0).any(|v| v == want.as_bytes()))
            .unwrap_or(false)
    })
}

/// The last step logged in a run's metrics.
fn last_step(run: &Path) -> u64 {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["step"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Collects a child's pipe in a thread.
fn collect(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

#[test]
fn a_killed_rank_is_named_by_the_other_and_resume_on_two_ranks_finishes_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let steps = 80;
    let steps_setting = format!("train.steps={steps}");
    let settings = [
        "model.blocks=2",
        "model.hidden=[32, 32]",
        "train.batch_size=256",
        "train.checkpoint_every=5",
        "train.log_every=1",
        "data.test_size=64",
        steps_setting.as_str(),
    ];
    let mut launcher = genflow()
        .args(["launch", "--nproc", "2", "--", "train"])
        .args(args("iresnet-toy", &run, &settings))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (out, err) = (
        collect(launcher.stdout.take().unwrap()),
        collect(launcher.stderr.take().unwrap()),
    );
    // Wait until the run is under way, with a checkpoint written.
    let deadline = Instant::now() + Duration::from_secs(60);
    while last_step(&run) < 5 {
        assert!(Instant::now() < deadline, "the run did not reach step 5");
        assert!(
            launcher.try_wait().unwrap().is_none(),
            "the run ended early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let victim = rank_pid(&children(launcher.id()), 1).expect("rank 1's process");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // The other rank must stop, naming rank 1, within 60 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = launcher.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = launcher.kill();
            panic!("the ranks did not stop within 60 s of rank 1's death");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = format!("{}{}", out.join().unwrap(), err.join().unwrap());
    assert!(!status.success(), "{text}");
    let named = text
        .lines()
        .any(|l| l.starts_with("[rank 0] error:") && l.contains("rank 1 (pid"));
    assert!(named, "rank 0 did not name rank 1:\n{text}");
    let stopped_at = last_step(&run);
    assert!(stopped_at < steps, "the run finished before the kill");

    // Resumed on two ranks from the last checkpoint, the run finishes.
    let resume = [
        "--resume".to_string(),
        "--out".to_string(),
        run.display().to_string(),
    ];
    let log = train(2, &resume);
    assert!(log.contains("data-parallel on 2 ranks"), "{log}");
    assert!(
        log.contains(&format!("from step {}", stopped_at - stopped_at % 5)),
        "{log}"
    );
    assert_eq!(last_step(&run), steps, "{log}");
}

#[test]
fn ranks_started_like_torchrun_with_different_configurations_refuse_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let port = genflow::distributed::launch::free_port().unwrap();
    let rank = |rank: usize, steps: &str| {
        genflow()
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", "2")
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("GENFLOW_DIST_TIMEOUT", "60")
            .arg("train")
            .args(args("iresnet-toy", &run, &["model.blocks=1", steps]))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let ranks = [rank(0, "train.steps=5"), rank(1, "train.steps=6")];
    for (r, child) in ranks.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "rank {r} trained:\n{err}");
        assert!(
            err.contains("the configuration differs between ranks: rank 1 has"),
            "rank {r}:\n{err}"
        );
    }
    assert!(!run.join("checkpoint.safetensors").exists());
}

#[test]
fn shards_cover_the_batch_in_rank_order_and_draw_the_global_rows() {
    use genflow::seeds::BatchShard;
    for (ranks, global) in [(2, 5), (3, 64), (4, 4), (3, 7)] {
        let shards: Vec<BatchShard> = (0..ranks)
            .map(|r| BatchShard::of(r, ranks, global))
            .collect();
        let mut next = 0;
        for s in &shards {
            assert_eq!(s.offset, next);
            assert!(
                s.len == global / ranks || s.len == global / ranks + 1,
                "{s:?}"
            );
            next += s.len;
        }
        assert_eq!(next, global);
        let mean_weight: f64 = shards.iter().map(|s| s.weight()).sum::<f64>() / ranks as f64;
        assert!((mean_weight - 1.0).abs() < 1e-15);
    }
    let whole = BatchShard::whole(6);
    assert!(whole.is_whole() && whole.weight() == 1.0);
    let rows = Tensor::arange(10, (Kind::Int64, tch::Device::Cpu)).reshape([5, 2]);
    let s = BatchShard::of(1, 2, 5);
    assert_eq!(
        Vec::<i64>::try_from(s.rows(&rows).reshape([-1])).unwrap(),
        [4, 5, 6, 7, 8, 9]
    );
    // A per-row draw for the shard's rows is the global draw's rows.
    let global = |shape: &[i64]| {
        Tensor::arange(
            shape.iter().product::<i64>(),
            (Kind::Int64, tch::Device::Cpu),
        )
        .reshape(shape)
    };
    assert_eq!(
        Vec::<i64>::try_from(s.draw(&[3, 2], global).reshape([-1])).unwrap(),
        [4, 5, 6, 7, 8, 9]
    );
    // A shape that is not the shard's rows is drawn as it is.
    assert_eq!(s.draw(&[2, 2], global).size(), [2, 2]);
}
