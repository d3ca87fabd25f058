//! The CLI contract of `genflow train / eval / sample / presets` on tiny toy runs.
mod common;

use common::{error_line, genflow, ok};
use std::path::Path;
use std::process::Output;

const TINY: &[&str] = &[
    "--set",
    "model.blocks=2",
    "--set",
    "model.hidden=[16, 16]",
    "--set",
    "train.batch_size=64",
    "--set",
    "data.test_size=512",
    "--set",
    "train.checkpoint_every=10",
    "--set",
    "train.log_every=5",
    // the preset's cosine decays over the run's length; an explicit length lets runs be extended
    "--set",
    "optim.schedule.total_steps=4000",
];

fn train(dir: &Path, steps: u64, extra: &[&str]) -> Output {
    let steps = format!("train.steps={steps}");
    let mut args = vec![
        "train",
        "--config",
        "iresnet-toy",
        "--out",
        dir.to_str().unwrap(),
        "--set",
        &steps,
    ];
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    genflow(&args)
}

#[test]
fn train_eval_sample_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    ok(&train(&run, 20, &[]));
    for f in [
        "checkpoint.safetensors",
        "metrics.jsonl",
        "config.toml",
        "density.png",
        "samples.png",
    ] {
        assert!(run.join(f).exists(), "missing {f}");
    }
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = metrics
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, vec![5, 10, 15, 20]);

    let report: serde_json::Value = serde_json::from_str(&ok(&genflow(&[
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    for key in [
        "test_nll_nats",
        "true_nll_nats",
        "inverse_max_abs_err",
        "inverse_iters_max",
        "lipschitz_max",
    ] {
        assert!(
            report.get(key).is_some(),
            "eval report lacks {key}: {report}"
        );
    }
    assert!(
        report["inverse_max_abs_err"].as_f64().unwrap() < 1e-4,
        "{report}"
    );
    let lip = report["lipschitz_max"].as_f64().unwrap();
    assert!(
        lip > 0.0 && lip <= report["lipschitz_target"].as_f64().unwrap() * (1.0 + 1e-5),
        "{report}"
    );
    // the true NLL of 8gaussians on the test set is near its Monte Carlo value 2.8324
    assert!(
        (report["true_nll_nats"].as_f64().unwrap() - 2.8324).abs() < 0.05,
        "{report}"
    );

    let csv = dir.path().join("s.csv");
    ok(&genflow(&[
        "sample",
        "--run",
        run.to_str().unwrap(),
        "-n",
        "100",
        "--out",
        csv.to_str().unwrap(),
    ]));
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 101);
    let png = dir.path().join("s.png");
    ok(&genflow(&[
        "sample",
        "--run",
        run.to_str().unwrap(),
        "-n",
        "500",
        "--out",
        png.to_str().unwrap(),
    ]));
    assert!(png.exists());
}

#[test]
fn resume_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let straight = dir.path().join("straight");
    let split = dir.path().join("split");
    ok(&train(&straight, 20, &[]));
    ok(&train(&split, 10, &[]));
    ok(&train(&split, 20, &["--resume"]));
    let (a, ma) =
        genflow::train::checkpoint::load(&straight.join("checkpoint.safetensors")).unwrap();
    let (b, mb) = genflow::train::checkpoint::load(&split.join("checkpoint.safetensors")).unwrap();
    assert_eq!((ma.step, mb.step), (20, 20));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, t) in &a {
        let diff = (t.to_kind(tch::Kind::Double) - b[name].to_kind(tch::Kind::Double))
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff == 0.0, "{name} differs by {diff} after resume");
    }
}

#[test]
fn presets_are_listed() {
    let out = ok(&genflow(&["presets"]));
    assert!(out.contains("iresnet-toy"), "{out}");
}

#[test]
fn bad_input_gives_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let err = error_line(&train(&run, 5, &["--set", "model.colour=3"]));
    assert!(err.contains("colour"), "{err}");
    let err = error_line(&train(&run, 5, &["--set", "model.spectral.coeff=1.0"]));
    assert!(err.contains("coefficient") && err.contains("1"), "{err}");
    let err = error_line(&genflow(&[
        "eval",
        "--run",
        dir.path().join("nope").to_str().unwrap(),
    ]));
    assert!(err.contains("not found"), "{err}");
    let err = error_line(&genflow(&[
        "train",
        "--config",
        "no-such-preset",
        "--out",
        run.to_str().unwrap(),
    ]));
    assert!(err.contains("no-such-preset"), "{err}");
    // a corrupt checkpoint is reported, not crashed on
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("checkpoint.safetensors"), b"garbage").unwrap();
    let err = error_line(&genflow(&["eval", "--run", run.to_str().unwrap()]));
    assert!(err.contains("corrupt"), "{err}");
}
