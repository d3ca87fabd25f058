//! The image jobs end to end on a synthetic digits file the test writes itself: density training
//! with resume and evaluation, sampling, and classifier training.
mod common;

use common::{genflow, ok, write_digits};
use std::path::Path;
use std::process::Command;

#[test]
fn image_density_and_classifier_runs() {
    let tmp = tempfile::tempdir().unwrap();
    write_digits(tmp.path());
    let data = format!("data.dir=\"{}\"", tmp.path().display());
    let run = tmp.path().join("density");
    let run_s = run.to_str().unwrap();
    let density = |steps: &str, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--config",
            "iresnet-digits",
            "--out",
            run_s,
            "--set",
            &data,
        ];
        for s in [
            "model.scales=[1, 1]",
            "model.hidden=8",
            // an explicit schedule length lets the run be extended by --resume
            "optim.schedule.total_steps=1440",
            "train.batch_size=32",
            "train.eval_every=2",
            "train.log_every=1",
            steps,
        ] {
            args.extend(["--set", s]);
        }
        args.extend_from_slice(extra);
        genflow(&args)
    };
    ok(&density("train.steps=2", &[]));
    ok(&density("train.steps=4", &["--resume"]));
    for f in [
        "checkpoint.safetensors",
        "best.safetensors",
        "samples.png",
        "reconstructions.png",
        "curves.png",
    ] {
        assert!(run.join(f).exists(), "missing {f}");
    }
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 4, "{metrics}");
    let report: serde_json::Value = serde_json::from_str(&ok(&genflow(&[
        "eval",
        "--run",
        run_s,
        "--json",
        "--samples",
        "0",
    ])))
    .unwrap();
    let bpd = report["test_bits_per_dim"].as_f64().unwrap();
    // a density on 17 levels per pixel: bits/dim lies between 0 and well above log2(17) = 4.09 early
    assert!(bpd.is_finite() && bpd > 0.0, "{report}");
    assert!(
        report["inverse_max_abs_err"].as_f64().unwrap() < 1e-4,
        "{report}"
    );
    assert_eq!(report["test_images"], 30);
    let png = tmp.path().join("s.png");
    ok(&genflow(&[
        "sample",
        "--run",
        run_s,
        "-n",
        "16",
        "--out",
        png.to_str().unwrap(),
    ]));
    assert!(png.exists());

    let cls = tmp.path().join("cls");
    let mut args = vec![
        "train",
        "--config",
        "iresnet-classifier-mnist",
        "--out",
        cls.to_str().unwrap(),
        "--set",
        &data,
    ];
    for s in [
        "data.dataset=\"digits\"",
        "model.in_shape=[1, 8, 8]",
        "model.stages=[1, 1]",
        "model.hidden=[8, 8]",
        "train.steps=3",
        "train.batch_size=32",
        "data.test_size=30",
    ] {
        args.extend(["--set", s]);
    }
    ok(&genflow(&args));
    let report: serde_json::Value = serde_json::from_str(&ok(&genflow(&[
        "eval",
        "--run",
        cls.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    let acc = report["test_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{report}");
    assert!(
        report["inverse_max_abs_err"].as_f64().unwrap() < 1e-3,
        "{report}"
    );
}

/// Runs one of the PyTorch scripts in `benches/pytorch/` with the torch wheel genflow builds
/// against (`$GENFLOW_TORCH_SITE`, set by `scripts/with-libtorch`); returns its JSON report.
fn pytorch(script: &str, args: &[&str]) -> serde_json::Value {
    let site = std::env::var("GENFLOW_TORCH_SITE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/genflow/torch-2.13.0",
            std::env::var("HOME").unwrap()
        )
    });
    let out = Command::new("python3")
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("benches/pytorch")
                .join(script),
        )
        .args(args)
        .env("PYTHONPATH", site)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("run python3 (needed for the PyTorch cross-checks)");
    assert!(
        out.status.success(),
        "{script} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The checkpoint format is usable outside genflow: the independent PyTorch model of
/// `benches/pytorch/image_flow_reference.py` reads a genflow run and recomputes its test bits/dim
/// (midpoint dequantisation, exact log-det of the whole map) to 1e-3; and a model trained by
/// `train_image_flow.py` is evaluated by `genflow eval`.
#[test]
fn pytorch_reference_reproduces_genflow_bits_per_dim() {
    let tmp = tempfile::tempdir().unwrap();
    write_digits(tmp.path());
    let data = format!("data.dir=\"{}\"", tmp.path().display());
    let sets = [
        data.as_str(),
        "model.scales=[2, 1]",
        "model.hidden=8",
        "model.base=\"diagonal_gaussian\"",
        "train.batch_size=32",
        "train.steps=6",
        "train.ema_decay=0.9",
        "optim.schedule.warmup_steps=2",
        "optim.schedule.total_steps=6",
    ];
    let run = tmp.path().join("density");
    let run_s = run.to_str().unwrap();
    let mut args = vec!["train", "--config", "iresnet-digits", "--out", run_s];
    for s in sets {
        args.extend(["--set", s]);
    }
    ok(&genflow(&args));
    let eval = tmp.path().join("eval.json");
    std::fs::write(
        &eval,
        ok(&genflow(&[
            "eval",
            "--run",
            run_s,
            "--json",
            "--samples",
            "0",
        ])),
    )
    .unwrap();
    let eval_s = eval.to_str().unwrap();
    let reference = pytorch("image_flow_reference.py", &[run_s, "--compare", eval_s]);
    let diff = reference["abs_difference"].as_f64().unwrap();
    assert!(diff < 1e-3, "{reference}");
    assert_eq!(reference["ema_weights"], true);

    let torch_run = tmp.path().join("torch");
    let torch_s = torch_run.to_str().unwrap();
    let preset = Path::new(env!("CARGO_MANIFEST_DIR")).join("presets/iresnet-digits.toml");
    let mut args = vec!["--config", preset.to_str().unwrap(), "--out", torch_s];
    for s in sets {
        args.extend(["--set", s]);
    }
    args.extend(["--compare", eval_s, "--tol", "1.0"]);
    let trained = pytorch("train_image_flow.py", &args);
    let report: serde_json::Value = serde_json::from_str(&ok(&genflow(&[
        "eval",
        "--run",
        torch_s,
        "--json",
        "--samples",
        "0",
    ])))
    .unwrap();
    let (theirs, ours) = (
        trained["test_bits_per_dim_midpoint"].as_f64().unwrap(),
        report["test_bits_per_dim_midpoint"].as_f64().unwrap(),
    );
    assert!((theirs - ours).abs() < 1e-3, "{trained} vs {report}");
}
