//! Every preset shipped in the binary parses, builds its full model, and trains and evaluates for
//! two steps through the command line on synthetic data in its data set's standard format. The
//! GPU-sized `-paper` presets train and evaluate at a reduced depth and width (their full models
//! are built, but a CPU test cannot afford to train them); everything else about them (data,
//! estimators, optimiser, schedule) is the preset's.
mod common;

use common::write_synthetic_data;
use genflow::config::PRESETS;
use genflow::tasks::{JobConfig, TaskConfig};
use std::path::Path;
use std::process::Command;

/// The data set a preset reads (`None` for toys), and the size overrides its tiny run needs.
fn tiny_run(job: &JobConfig, name: &str) -> (Option<String>, Vec<String>) {
    let paper = name.ends_with("-paper");
    match &job.task {
        TaskConfig::ToyDensity(_) => (
            None,
            vec!["model.blocks=2".into(), "data.test_size=64".into()],
        ),
        TaskConfig::ImageDensity(c) => {
            let mut sets = vec![];
            if paper {
                sets.extend(["model.scales=[1, 1, 1]".into(), "model.hidden=8".into()]);
            }
            (Some(c.data.dataset.to_string()), sets)
        }
        TaskConfig::FeatureClassifier(c) => (Some(c.data.dataset.to_string()), vec![]),
        TaskConfig::Glann(c) => {
            let mut sets = vec!["train.imle_rounds=1".into(), "eval.samples=16".into()];
            if paper {
                sets.extend([
                    "model.generator.hidden=16".into(),
                    "model.generator.channels=[8, 8]".into(),
                ]);
            }
            (Some(c.data.dataset.to_string()), sets)
        }
        TaskConfig::Classifier(c) => {
            let mut sets = vec![];
            if paper {
                sets.extend([
                    "model.stages=[1, 1, 1]".into(),
                    "model.hidden=[8, 8, 8]".into(),
                ]);
            }
            (Some(c.data.dataset.to_string()), sets)
        }
        TaskConfig::ToyGan(_) => (None, vec!["data.test_size=64".into()]),
        TaskConfig::ImageGan(c) => {
            let mut sets = vec!["eval.samples=16".into()];
            if paper {
                sets.push("model.width=4".into());
            }
            (Some(c.data.dataset.to_string()), sets)
        }
    }
}

fn genflow(args: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_genflow"))
        .args(["--device", "cpu", "--threads", "1"])
        .args(args)
        .output()
        .expect("run genflow")
}

fn check(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The keys of a task's `eval --json` report that must hold finite numbers.
fn report_keys(job: &JobConfig) -> &'static [&'static str] {
    match &job.task {
        TaskConfig::FeatureClassifier(_) => &["test_accuracy"],
        TaskConfig::ToyGan(_) => &["modes_covered", "high_quality_fraction"],
        TaskConfig::ImageGan(c) if c.model.encoder => &["samples", "rho_mean", "recon_mse"],
        TaskConfig::ImageGan(_) => &["samples", "test_images"],
        TaskConfig::Glann(_) => &[
            "recon_mse",
            "recon_loss",
            "codes_sphere_deviation",
            "imle_regression_mse",
            "fd",
            "kid_mean",
            "fd_glo_gaussian",
            "kid_glo_gaussian",
        ],
        _ => &[
            "inverse_max_abs_err",
            "inverse_iters_max",
            "inverse_residual_max",
            "lipschitz_max",
        ],
    }
}

fn train_and_evaluate(name: &str, tmp: &Path) {
    let job = JobConfig::resolve(name, &[]).unwrap();
    let (dataset, mut sets) = tiny_run(&job, name);
    if let Some(dataset) = &dataset {
        let dir = tmp.join("data");
        if !dir.join(dataset).exists() {
            write_synthetic_data(&dir, dataset, 40, 12);
        }
        if dataset == "folder" {
            sets.push(format!("data.folder=\"{}\"", dir.join(dataset).display()));
        } else {
            sets.push(format!("data.dir=\"{}\"", dir.display()));
        }
        sets.push("data.test_size=12".into());
    }
    // the full model builds (on the run's data: GLANN sizes its code table by it)
    let data_only: Vec<String> = sets
        .iter()
        .filter(|s| s.starts_with("data."))
        .cloned()
        .collect();
    let full = JobConfig::resolve(name, &data_only).unwrap();
    let task = full.task.build(&full.run, tch::Device::Cpu).unwrap();
    assert!(!task.vars().variables().is_empty(), "{name}: no parameters");
    drop(task);

    sets.extend(["train.steps=2", "train.batch_size=4", "train.eval_every=2"].map(String::from));
    let run = tmp.join(name);
    let mut args: Vec<String> = ["train", "--config", name, "--out"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(run.display().to_string());
    for s in &sets {
        args.extend(["--set".to_string(), s.clone()]);
    }
    check(genflow(&args), &format!("training {name}"));
    // image generators also get the sample-quality metrics, on a feature network trained on
    // the synthetic data set
    let eval = [
        "eval",
        "--run",
        &run.display().to_string(),
        "--json",
        "--samples",
        "8",
    ]
    .map(String::from);
    let report: serde_json::Value =
        serde_json::from_str(&check(genflow(&eval), &format!("evaluating {name}"))).unwrap();
    for &key in report_keys(&job) {
        let v = report[key].as_f64().unwrap_or(f64::NAN);
        assert!(v.is_finite(), "{name}: {key} in {report}");
    }
}

#[test]
fn every_preset_builds_trains_and_evaluates() {
    let tmp = tempfile::tempdir().unwrap();
    for preset in PRESETS {
        let started = std::time::Instant::now();
        train_and_evaluate(preset.name, tmp.path());
        eprintln!("{}: {:.1} s", preset.name, started.elapsed().as_secs_f64());
    }
}
