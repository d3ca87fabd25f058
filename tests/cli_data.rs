//! A trained model on one's own data: `genflow log-prob`, `encode` and `decode` for points (CSV)
//! and images (PNG, IDX, `.safetensors`), checked against `genflow eval` and against each other.
mod common;

use common::{genflow as run, ok};

use genflow::data::tensor_file;
use genflow::data::toy::ToyDensity;
use genflow::seeds::{derived_seed, Stream};
use std::path::Path;
use tch::{Kind, Tensor};

/// The columns of a CSV file with a header, by name.
fn csv_columns(path: &Path) -> std::collections::BTreeMap<String, Vec<f64>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    let mut columns: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for line in lines {
        for (name, v) in header.iter().zip(line.split(',')) {
            columns
                .entry(name.clone())
                .or_default()
                .push(v.parse().unwrap());
        }
    }
    columns
}

fn eval(dir: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["eval", "--run", dir, "--json", "--samples", "0"];
    args.extend(extra);
    serde_json::from_str(&ok(&run(&args))).unwrap()
}

#[test]
fn toy_log_prob_encode_and_decode() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let d = dir.to_str().unwrap();
    ok(&run(&[
        "train",
        "--config",
        "iresnet-toy",
        "--out",
        d,
        "--set",
        "model.blocks=2",
        "--set",
        "model.hidden=[16, 16]",
        "--set",
        "train.steps=20",
        "--set",
        "train.batch_size=64",
        "--set",
        "data.test_size=512",
    ]));
    let report = eval(d, &[]);
    // sample metrics of a 2-D toy: modes of 8gaussians, and the samples' true-density NLL
    assert!(
        report["modes_covered"].as_u64().is_some_and(|m| m <= 8),
        "{report}"
    );
    assert!(report["high_quality_fraction"]
        .as_f64()
        .is_some_and(|f| (0.0..=1.0).contains(&f)));
    assert!(
        report["samples_true_nll_nats"]
            .as_f64()
            .is_some_and(f64::is_finite),
        "{report}"
    );

    // the run's own test points, as `genflow eval` draws them (seed 0, test stream, step 1)
    let points = ToyDensity::EightGaussians.sample(512, derived_seed(0, Stream::Test, 1));
    let rows: Vec<Vec<f64>> = (0..512)
        .map(|i| vec![points.double_value(&[i, 0]), points.double_value(&[i, 1])])
        .collect();
    let input = tmp.path().join("points.csv");
    genflow::data::user_files::write_csv(&input, &["x".into(), "y".into()], &rows).unwrap();

    let out = tmp.path().join("log_prob.csv");
    ok(&run(&[
        "log-prob",
        "--run",
        d,
        "--in",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    let log_prob = &csv_columns(&out)["log_prob"];
    assert_eq!(log_prob.len(), 512);
    let nll = -log_prob.iter().sum::<f64>() / 512.0;
    let want = report["test_nll_nats"].as_f64().unwrap();
    assert!(
        (nll - want).abs() <= 1e-6 * want.abs(),
        "log-prob mean {nll} vs eval {want}"
    );

    let z = tmp.path().join("z.csv");
    ok(&run(&[
        "encode",
        "--run",
        d,
        "--in",
        input.to_str().unwrap(),
        "--out",
        z.to_str().unwrap(),
    ]));
    let back = tmp.path().join("back.csv");
    let said = ok(&run(&[
        "decode",
        "--run",
        d,
        "--in",
        z.to_str().unwrap(),
        "--out",
        back.to_str().unwrap(),
    ]));
    assert!(said.contains("512 converged"), "{said}");
    let columns = csv_columns(&back);
    assert!(columns["converged"].iter().all(|&c| c == 1.0));
    assert!(columns["inverse_iters"].iter().all(|&i| i >= 1.0));
    // the eval inverse tolerance is atol = rtol = 1e-6 (preset), in f32
    for (i, row) in rows.iter().enumerate() {
        for (j, name) in ["x", "y"].iter().enumerate() {
            let err = (columns[*name][i] - row[j]).abs();
            assert!(err < 1e-4, "point {i}: {name} off by {err}");
        }
    }
}

/// A tiny image density run on the stripe digits, and one classifier run.
fn image_runs(tmp: &Path) -> (String, String) {
    common::write_digits(tmp);
    let data = format!("data.dir=\"{}\"", tmp.display());
    let density = tmp.join("density").display().to_string();
    let classifier = tmp.join("classifier").display().to_string();
    ok(&run(&[
        "train",
        "--config",
        "iresnet-digits",
        "--out",
        &density,
        "--set",
        &data,
        "--set",
        "model.scales=[1, 1]",
        "--set",
        "model.hidden=8",
        "--set",
        "train.steps=4",
        "--set",
        "train.batch_size=32",
    ]));
    ok(&run(&[
        "train",
        "--config",
        "iresnet-classifier-mnist",
        "--out",
        &classifier,
        "--set",
        &data,
        "--set",
        "data.dataset=\"digits\"",
        "--set",
        "model.in_shape=[1, 8, 8]",
        "--set",
        "model.stages=[1, 1]",
        "--set",
        "model.hidden=[8, 8]",
        "--set",
        "train.steps=3",
        "--set",
        "train.batch_size=32",
    ]));
    (density, classifier)
}

/// The 30 test digits as intensities (levels / 16) under `images` in a `.safetensors` file.
fn test_digits(tmp: &Path) -> (std::path::PathBuf, Tensor) {
    let test = genflow::data::load(
        genflow::data::DatasetName::Digits,
        genflow::data::Split::Test,
        tmp,
    )
    .unwrap();
    let v = test.images.to_kind(Kind::Float) / 16.0;
    let path = tmp.join("digits.safetensors");
    tensor_file::save(
        &path,
        &[("images".to_string(), v.shallow_clone())],
        Default::default(),
    )
    .unwrap();
    (path, v)
}

#[test]
fn image_log_prob_encode_and_decode() {
    let tmp = tempfile::tempdir().unwrap();
    let (density, classifier) = image_runs(tmp.path());
    let (digits, v) = test_digits(tmp.path());
    let digits_s = digits.to_str().unwrap();

    // bits/dim per image at the midpoint: their mean is eval's midpoint bits/dim
    let out = tmp.path().join("bpd.csv");
    ok(&run(&[
        "log-prob",
        "--run",
        &density,
        "--in",
        digits_s,
        "--out",
        out.to_str().unwrap(),
    ]));
    let columns = csv_columns(&out);
    let bpd = &columns["bits_per_dim"];
    let mean = bpd.iter().sum::<f64>() / bpd.len() as f64;
    let want = eval(&density, &[])["test_bits_per_dim_midpoint"]
        .as_f64()
        .unwrap();
    assert!(
        (mean - want).abs() < 1e-5,
        "log-prob bits/dim {mean} vs eval {want}"
    );
    for (lp, b) in columns["log_prob"].iter().zip(bpd) {
        assert!((lp + b * 64.0 * std::f64::consts::LN_2).abs() < 1e-6 * lp.abs());
    }

    // decode(encode(x)) = x for the flow and for the classifier's feature map
    for (run_dir, tol) in [(&density, 1e-4), (&classifier, 1e-3)] {
        let z = tmp.path().join("z.safetensors");
        let back = tmp.path().join("back.safetensors");
        ok(&run(&[
            "encode",
            "--run",
            run_dir,
            "--in",
            digits_s,
            "--out",
            z.to_str().unwrap(),
        ]));
        ok(&run(&[
            "decode",
            "--run",
            run_dir,
            "--in",
            z.to_str().unwrap(),
            "--out",
            back.to_str().unwrap(),
        ]));
        let (tensors, _) = tensor_file::load(&back).unwrap();
        let err = (&tensors["images"] - &v).abs().max().double_value(&[]);
        assert!(err < tol, "{run_dir}: decode(encode(x)) off by {err}");
        assert_eq!(tensors["converged"].sum(Kind::Int64).int64_value(&[]), 30);
    }

    // PNG grids and IDX files are read back as images
    let png = tmp.path().join("samples.png");
    ok(&run(&[
        "sample",
        "--run",
        &density,
        "-n",
        "5",
        "--out",
        png.to_str().unwrap(),
    ]));
    let z = tmp.path().join("z.csv");
    ok(&run(&[
        "encode",
        "--run",
        &density,
        "--in",
        png.to_str().unwrap(),
        "--out",
        z.to_str().unwrap(),
    ]));
    assert_eq!(std::fs::read_to_string(&z).unwrap().lines().count(), 1 + 5);
    let idx = tmp.path().join("digits-idx3-ubyte");
    genflow::data::user_files::write_images(&idx, &v).unwrap();
    let back = genflow::data::user_files::read_images(&idx, [1, 8, 8]).unwrap();
    assert!((back - &v).abs().max().double_value(&[]) < 0.5 / 255.0 + 1e-6);
}
