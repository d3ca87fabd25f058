//! GANs through the command line on tiny runs: train / eval / resume of the toy GAN (the moving
//! average covers the generator only), an O-GAN on synthetic MNIST files with its pictures,
//! `genflow encode` and `decode`, the full 128x128 reference model for two steps on an image
//! folder, and bad input as one-line errors naming the file or setting.
mod common;

use common::{error_line, genflow, ok, write_synthetic_data};
use std::path::Path;
use std::process::Output;

fn train(config: &str, out: &Path, sets: &[String], extra: &[&str]) -> Output {
    let mut args = vec!["train", "--config", config, "--out", out.to_str().unwrap()];
    for s in sets {
        args.extend(["--set", s.as_str()]);
    }
    args.extend_from_slice(extra);
    genflow(&args)
}

fn eval(run: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["eval", "--run", run.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(&genflow(&args))).unwrap()
}

fn sets(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn toy_gan_trains_evaluates_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = |steps: u64| {
        let mut s = sets(&[
            "model.hidden=[16, 16]",
            "train.batch_size=64",
            "data.test_size=500",
            "train.checkpoint_every=5",
            "train.log_every=5",
            "train.eval_every=10",
            "train.ema_decay=0.9",
        ]);
        s.push(format!("train.steps={steps}"));
        s
    };
    let (straight, split) = (dir.path().join("straight"), dir.path().join("split"));
    ok(&train("gan-toy", &straight, &tiny(20), &[]));
    ok(&train("gan-toy", &split, &tiny(10), &[]));
    ok(&train("gan-toy", &split, &tiny(20), &["--resume"]));
    let load = |run: &Path| {
        genflow::train::checkpoint::load(&run.join("checkpoint.safetensors"))
            .unwrap()
            .0
    };
    let (a, b) = (load(&straight), load(&split));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, t) in &a {
        let diff = (t.to_kind(tch::Kind::Double) - b[name].to_kind(tch::Kind::Double))
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff == 0.0, "{name} differs by {diff} after resume");
    }
    // the moving average covers the generator only
    assert!(a.keys().any(|k| k.starts_with("ema.generator.")));
    assert!(!a.keys().any(|k| k.starts_with("ema.discriminator.")));

    let report = eval(&straight, &[]);
    for key in ["modes_covered", "high_quality_fraction", "nearest_counts"] {
        assert!(report.get(key).is_some(), "no {key} in {report}");
    }
    assert_eq!(report["update"], "alternating");
    assert_eq!(report["n"], 500);
    assert!(straight.join("samples.png").exists() && straight.join("curves.png").exists());
    // the evaluations during training logged the modes
    let metrics = std::fs::read_to_string(straight.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("test_modes_covered"), "{metrics}");
    assert!(
        metrics.contains("g_loss") && metrics.contains("d_real"),
        "{metrics}"
    );

    let single = dir.path().join("single");
    let mut s = tiny(10);
    s.push("train.update=\"single-loss\"".into());
    ok(&train("gan-toy", &single, &s, &[]));
    assert_eq!(eval(&single, &[])["update"], "single-loss");
    // a plain GAN cannot encode
    let csv = dir.path().join("points.csv");
    std::fs::write(&csv, "x,y\n0.5,1.0\n").unwrap();
    let codes = dir.path().join("codes.csv");
    let err = error_line(&genflow(&[
        "encode",
        "--run",
        single.to_str().unwrap(),
        "--in",
        csv.to_str().unwrap(),
        "--out",
        codes.to_str().unwrap(),
    ]));
    assert!(err.contains("encode needs"), "{err}");

    // a toy O-GAN encodes points into its latent space
    let ogan = dir.path().join("ogan");
    let mut s = tiny(10);
    s.extend(sets(&["model.encoder=true", "train.rho_weight=2.0"]));
    ok(&train("gan-toy", &ogan, &s, &[]));
    let report = eval(&ogan, &[]);
    assert!(report["rho_mean"].as_f64().is_some() && report["recon_mse"].as_f64().is_some());
    let out = ok(&genflow(&[
        "encode",
        "--run",
        ogan.to_str().unwrap(),
        "--in",
        csv.to_str().unwrap(),
        "--out",
        codes.to_str().unwrap(),
    ]));
    assert!(out.contains("encoded 1 items"), "{out}");
    let header = std::fs::read_to_string(&codes).unwrap();
    assert!(header.starts_with("z0,z1,z2"), "{header}");
}

#[test]
fn ogan_encodes_reconstructs_and_interpolates() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_synthetic_data(&data, "mnist", 64, 16);
    let run = dir.path().join("run");
    let mut s = sets(&[
        "model.width=8",
        "model.z_dim=8",
        "train.epochs=1",
        "train.batch_size=16",
        "train.eval_every=2",
        "eval.samples=32",
    ]);
    s.push(format!("data.dir=\"{}\"", data.display()));
    ok(&train("ogan-mnist", &run, &s, &[]));
    for f in [
        "samples.png",
        "reconstructions.png",
        "interpolations.png",
        "curves.png",
    ] {
        assert!(run.join(f).exists(), "missing {f}");
    }
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(
        metrics.contains("test_rho_mean") && metrics.contains("\"rho\""),
        "{metrics}"
    );
    // the sample-quality metrics and the labels of the reconstructions come from a feature
    // network that genflow trains once on the (synthetic) data set
    let report = eval(&run, &["--samples", "16"]);
    let rho = report["rho_mean"].as_f64().unwrap();
    assert!((-1.0..=1.0).contains(&rho), "{report}");
    assert!(report["recon_mse"].as_f64().unwrap() >= 0.0, "{report}");
    for key in ["recon_label_agreement", "input_label_accuracy"] {
        let v = report[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{key} in {report}");
    }
    assert!(report["fd"].as_f64().unwrap().is_finite(), "{report}");
    assert_eq!(report["quality_samples"], 16);
    assert_eq!(report["test_images"], 16);

    // encode the test images, decode the codes
    let images = data.join("mnist/t10k-images-idx3-ubyte");
    let codes = dir.path().join("codes.safetensors");
    let out = ok(&genflow(&[
        "encode",
        "--run",
        run.to_str().unwrap(),
        "--in",
        images.to_str().unwrap(),
        "--out",
        codes.to_str().unwrap(),
    ]));
    assert!(out.contains("encoded 16 items"), "{out}");
    let z = genflow::data::user_files::read_tensor(&codes, "z").unwrap();
    assert_eq!(z.size(), [16, 8]);
    // N(E(x)): every code centred with unit standard deviation
    let z = z.to_kind(tch::Kind::Double);
    let mean = z
        .mean_dim(1, false, tch::Kind::Double)
        .abs()
        .max()
        .double_value(&[]);
    let std = z.square().mean_dim(1, false, tch::Kind::Double).sqrt();
    assert!(mean < 1e-5, "{mean}");
    assert!((std - 1.0).abs().max().double_value(&[]) < 1e-4);
    let decoded = dir.path().join("decoded.png");
    let out = ok(&genflow(&[
        "decode",
        "--run",
        run.to_str().unwrap(),
        "--in",
        codes.to_str().unwrap(),
        "--out",
        decoded.to_str().unwrap(),
    ]));
    assert!(out.contains("16 converged"), "{out}");
    assert!(decoded.exists());
}

/// Random RGB PNGs of `size` in `dir`.
fn random_pngs(dir: &Path, n: u32, size: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let img = image::RgbImage::from_fn(size, size + i % 3, |x, y| {
            let v = ((x * 37 + y * 11 + i * 53) % 256) as u8;
            image::Rgb([v, 255 - v, v / 3])
        });
        img.save(dir.join(format!("face{i:02}.png"))).unwrap();
    }
}

/// The O-GAN reference's full 128x128 model (64..1024 channels, kernel 5, z_dim 128) builds and
/// trains two single-loss steps on tiny random images, resized from a folder.
#[test]
fn ogan_celeba_paper_model_trains_two_steps_on_a_folder() {
    use genflow::tasks::{JobConfig, TaskConfig};
    let dir = tempfile::tempdir().unwrap();
    random_pngs(&dir.path().join("faces/a"), 6, 8);
    random_pngs(&dir.path().join("faces/b"), 4, 5);
    let folder = format!("data.folder=\"{}\"", dir.path().join("faces").display());
    let job =
        JobConfig::resolve("ogan-celeba-paper", &[folder, "train.batch_size=2".into()]).unwrap();
    let TaskConfig::ImageGan(config) = &job.task else {
        panic!("ogan-celeba-paper is not an image GAN");
    };
    assert_eq!(
        (
            config.model.width,
            config.model.levels,
            config.model.kernel,
            config.model.z_dim
        ),
        (64, 5, 5, 128)
    );
    tch::manual_seed(0);
    let task = job.task.build(&job.run, tch::Device::Cpu).unwrap();
    let params: i64 = task
        .vars()
        .trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum();
    // encoder convs 3-64-128-256-512-1024 (5x5) and a 16384 -> 128 head; generator mirror
    assert!(params > 30_000_000, "{params} parameters");
    let mut training = task.training(&job.run).unwrap();
    // 10 images: 9 for training (5 steps of 2 per epoch), 1 for test
    assert_eq!(training.plan.steps_per_epoch, Some(5));
    let mut optimizer =
        genflow::optim::Optimizer::new(task.vars(), &job.run.optim.for_run(2)).unwrap();
    for step in 0..2 {
        let update = training.objective.update(step, &mut optimizer).unwrap();
        assert!(update.loss.is_finite(), "step {step}: {update:?}");
        assert!(update.metrics.iter().any(|(k, _)| k == "rho"));
    }
    assert_eq!(optimizer.step_count(), 2);
}

#[test]
fn bad_input_gives_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // an image size the strides cannot halve
    let err = error_line(&train(
        "gan-mnist",
        &run,
        &sets(&["model.image_shape=[1, 30, 30]"]),
        &[],
    ));
    assert!(
        err.contains("model.image_shape") && err.contains("multiple of 4"),
        "{err}"
    );
    // a folder without images
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(empty.join("sub")).unwrap();
    let folder = |p: &Path| format!("data.folder=\"{}\"", p.display());
    let tiny = |p: &Path| {
        let mut s = sets(&["model.width=4", "train.batch_size=2", "train.steps=1"]);
        s.push(folder(p));
        s
    };
    let err = error_line(&train("ogan-celeba-paper", &run, &tiny(&empty), &[]));
    assert!(
        err.contains(&empty.display().to_string()) && err.contains("no .png/.jpg/.jpeg"),
        "{err}"
    );
    // an unreadable image
    let faces = dir.path().join("faces");
    random_pngs(&faces, 3, 6);
    std::fs::write(faces.join("face01.png"), b"not a png").unwrap();
    let err = error_line(&train("ogan-celeba-paper", &run, &tiny(&faces), &[]));
    assert!(
        err.contains("face01.png") && err.contains("cannot decode"),
        "{err}"
    );
    // a folder size that is not the model's
    let mut s = tiny(&faces);
    s.push("data.image_size=[3, 64, 64]".into());
    let err = error_line(&train("ogan-celeba-paper", &run, &s, &[]));
    assert!(
        err.contains("data.image_size") && err.contains("model.image_shape"),
        "{err}"
    );
    // an O-GAN setting without an encoder
    let err = error_line(&train(
        "gan-mnist",
        &run,
        &sets(&["train.rho_weight=1.0"]),
        &[],
    ));
    assert!(err.contains("model.encoder"), "{err}");
    // an unknown update rule
    let err = error_line(&train(
        "gan-toy",
        &run,
        &sets(&["train.update=\"both\""]),
        &[],
    ));
    assert!(
        err.contains("train.update") && err.contains("single-loss"),
        "{err}"
    );
}
