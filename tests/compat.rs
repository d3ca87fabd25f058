//! Checkpoints written before the task registry (configuration format 1: `[image_model]`,
//! `[classifier]`, estimator settings every task carried) still load and evaluate to the numbers
//! the genflow of that time reported for them.
//!
//! `tests/fixtures/v1/<task>/checkpoint.safetensors` are tiny runs trained by genflow at commit
//! 6c2e4ca (the toy run: `iresnet-toy` with 2 blocks of hidden 16-16, 20 steps; the image runs on
//! the stripe digits of `common::write_digits`, 4 and 3 steps), and `<task>.eval.json` what its
//! `genflow eval --json` printed.
mod common;

use std::path::Path;
use std::process::Command;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/v1")
        .join(name)
}

/// `genflow eval --json` of a copy of a fixture run (eval writes its report into the run folder,
/// which must not be the repository's), with extra arguments.
fn eval(task: &str, extra: &[&str]) -> serde_json::Value {
    let copy = tempfile::tempdir().unwrap();
    let run = copy.path().join(task);
    std::fs::create_dir(&run).unwrap();
    for entry in std::fs::read_dir(fixture(task)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, run.join(path.file_name().unwrap())).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_genflow"))
        .args([
            "--device",
            "cpu",
            "--threads",
            "1",
            "eval",
            "--json",
            "--run",
        ])
        .arg(&run)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "eval of the {task} fixture failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap()
}

/// Every key the old report had, with the same value (numbers to 1e-12 relative).
fn assert_same_report(task: &str, now: &serde_json::Value) {
    let text = std::fs::read_to_string(fixture(&format!("{task}.eval.json"))).unwrap();
    let then: serde_json::Value = serde_json::from_str(&text).unwrap();
    for (key, old) in then.as_object().unwrap() {
        let new = &now[key];
        match (old.as_f64(), new.as_f64()) {
            (Some(a), Some(b)) => assert!(
                (a - b).abs() <= 1e-12 * a.abs().max(1.0),
                "{task}: {key} was {a}, now {b}"
            ),
            _ => assert_eq!(old, new, "{task}: {key}"),
        }
    }
}

#[test]
fn toy_density_checkpoint_of_format_1_evaluates_as_before() {
    assert_same_report("toy-density", &eval("toy-density", &[]));
}

#[test]
fn image_checkpoints_of_format_1_evaluate_as_before() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_digits(tmp.path());
    // the runs were trained with their data elsewhere: point eval at this copy
    let data = format!("data.dir=\"{}\"", tmp.path().display());
    for task in ["image-density", "classifier"] {
        let report = eval(task, &["--set", &data]);
        assert_same_report(task, &report);
        assert!(
            report["inverse_residual_max"].as_f64().unwrap() < 1.0,
            "{report}"
        );
    }
}
