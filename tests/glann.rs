//! GLANN (SPEC section 4): the Laplacian pyramid and its loss, the exact nearest-neighbour
//! search against brute force, the code projections, and a tiny GLANN run through the command
//! line (codes on the sphere and frozen while IMLE trains, resume bit for bit, pictures, eval,
//! encode).
mod common;

use common::{seed_lock, write_synthetic_data};
use genflow::glann::codes::{pca_codes, project_to_sphere, sphere_deviation, CodeGaussian};
use genflow::glann::search::{nearest, Blocks};
use genflow::glann::{LaplacianPyramid, ReconstructionLoss};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use tch::{Device, Kind, Tensor};

/// Image sizes of the pyramid properties: square and not, even and odd, down to 1 x 1.
const SIZES: [(i64, i64); 8] = [
    (1, 1),
    (1, 6),
    (2, 3),
    (5, 7),
    (8, 8),
    (13, 9),
    (28, 28),
    (33, 17),
];

fn rand_images(rng: &mut rand::rngs::StdRng, n: i64, c: i64, h: i64, w: i64) -> Tensor {
    let values: Vec<f64> = (0..n * c * h * w).map(|_| rng.random::<f64>()).collect();
    Tensor::from_slice(&values).reshape([n, c, h, w])
}

#[test]
fn laplacian_pyramid_reconstructs_random_images_exactly() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for levels in [1, 3, 6] {
        let pyramid = LaplacianPyramid::new(levels).unwrap();
        for (h, w) in SIZES {
            for c in [1, 3] {
                let x = rand_images(&mut rng, 2, c, h, w);
                let bands = pyramid.decompose(&x).unwrap();
                assert_eq!(bands.len(), pyramid.levels_for(h, w) + 1);
                let back = LaplacianPyramid::reconstruct(&bands).unwrap();
                let err = (&back - &x).abs().max().double_value(&[]);
                assert!(err < 1e-13, "{levels} levels, {c}x{h}x{w}: f64 error {err}");
                let xf = x.to_kind(Kind::Float);
                let back = LaplacianPyramid::reconstruct(&pyramid.decompose(&xf).unwrap()).unwrap();
                let err = (&back - &xf).abs().max().double_value(&[]);
                assert!(err < 1e-5, "{levels} levels, {c}x{h}x{w}: f32 error {err}");
            }
        }
    }
}

#[test]
fn laplacian_pyramid_halves_sizes_with_ceiling_and_stops_at_one_pixel() {
    let pyramid = LaplacianPyramid::new(10).unwrap();
    let x = Tensor::zeros([1, 1, 13, 5], (Kind::Double, Device::Cpu));
    let sizes: Vec<Vec<i64>> = pyramid
        .decompose(&x)
        .unwrap()
        .iter()
        .map(|b| b.size()[2..].to_vec())
        .collect();
    let expected: Vec<Vec<i64>> = vec![vec![13, 5], vec![7, 3], vec![4, 2], vec![2, 1], vec![1, 1]];
    assert_eq!(sizes, expected);
}

/// `Lap1 / (C H W)` from two separate pyramids with the weights `2^{2j}` of SPEC section 4.
fn lap1_from_definition(pyramid: &LaplacianPyramid, x: &Tensor, y: &Tensor) -> Vec<f64> {
    let (px, py) = (pyramid.decompose(x).unwrap(), pyramid.decompose(y).unwrap());
    let size = x.size();
    let values = (size[1] * size[2] * size[3]) as f64;
    (0..size[0])
        .map(|i| {
            px.iter()
                .zip(&py)
                .enumerate()
                .map(|(j, (a, b))| {
                    let l1 = (a.get(i) - b.get(i))
                        .abs()
                        .sum(Kind::Double)
                        .double_value(&[]);
                    4f64.powi(j as i32) * l1 / values
                })
                .sum()
        })
        .collect()
}

#[test]
fn laplacian_loss_is_zero_only_for_equal_images() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let pyramid = LaplacianPyramid::new(4).unwrap();
    let loss = ReconstructionLoss::Laplacian { levels: 4 };
    for (h, w) in SIZES {
        for c in [1, 3] {
            let x = rand_images(&mut rng, 3, c, h, w);
            let same = loss.per_image(&x, &x.copy()).unwrap();
            assert_eq!(
                Vec::<f64>::try_from(&same).unwrap(),
                [0.0; 3],
                "{c}x{h}x{w}"
            );
            // one pixel changed, anywhere (corners included): the loss is positive
            for _ in 0..4 {
                let y = x.copy();
                let (k, i, j) = (
                    rng.random_range(0..c),
                    rng.random_range(0..h),
                    rng.random_range(0..w),
                );
                let delta = if rng.random::<bool>() { 1e-3 } else { -1e-3 };
                let _ = y.get(1).get(k).get(i).get(j).g_add_scalar_(delta);
                let d = Vec::<f64>::try_from(&loss.per_image(&x, &y).unwrap()).unwrap();
                assert_eq!(d[0], 0.0);
                assert_eq!(d[2], 0.0);
                assert!(
                    d[1] > 0.0,
                    "{c}x{h}x{w}: a changed pixel gave loss {}",
                    d[1]
                );
            }
            // the loss of random pairs is the definition's (one pyramid of the difference)
            let y = rand_images(&mut rng, 3, c, h, w);
            let got = Vec::<f64>::try_from(&loss.per_image(&x, &y).unwrap()).unwrap();
            let want = lap1_from_definition(&pyramid, &x, &y);
            for (g, w_) in got.iter().zip(&want) {
                assert!(
                    (g - w_).abs() <= 1e-12 * w_.abs(),
                    "{c}x{h}x{w}: {g} vs {w_}"
                );
                assert!(*g > 0.0);
            }
        }
    }
}

#[test]
fn plain_losses_are_pixel_means() {
    let x = Tensor::from_slice(&[0.0f64, 1.0, 0.5, 0.25]).reshape([1, 1, 2, 2]);
    let y = Tensor::zeros([1, 1, 2, 2], (Kind::Double, Device::Cpu));
    let l1 = ReconstructionLoss::L1
        .per_image(&x, &y)
        .unwrap()
        .double_value(&[0]);
    let l2 = ReconstructionLoss::L2
        .per_image(&x, &y)
        .unwrap()
        .double_value(&[0]);
    assert_eq!((l1, l2), (1.75 / 4.0, (1.0 + 0.25 + 0.0625) / 4.0));
    let err = ReconstructionLoss::L1
        .per_image(&x, &y.view([1, 4, 1, 1]))
        .unwrap_err();
    assert!(
        err.to_string().contains("same shape") || err.to_string().contains("one shape"),
        "{err}"
    );
}

/// The lowest index of the smallest `sum_k (a_k - b_k)^2`, in f64, one pair at a time.
fn brute_force(queries: &Tensor, candidates: &Tensor) -> (Vec<i64>, Vec<f64>) {
    let q = Vec::<Vec<f64>>::try_from(&queries.to_kind(Kind::Double)).unwrap();
    let c = Vec::<Vec<f64>>::try_from(&candidates.to_kind(Kind::Double)).unwrap();
    q.iter()
        .map(|a| {
            let mut best = (0i64, f64::INFINITY);
            for (k, b) in c.iter().enumerate() {
                let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
                if d < best.1 {
                    best = (k as i64, d);
                }
            }
            best
        })
        .unzip()
}

/// Block shapes around the data's sizes: one row or column, sizes that divide nothing, and
/// blocks larger than the data.
fn block_shapes(m: i64, n: i64) -> Vec<Blocks> {
    [
        (1, 1),
        (1, n),
        (m, 1),
        (3, 7),
        (7, 3),
        (m - 1, n - 1),
        (m + 5, n + 5),
        (16, 64),
    ]
    .into_iter()
    .filter(|&(q, c)| q >= 1 && c >= 1)
    .map(|(queries, candidates)| Blocks {
        queries,
        candidates,
    })
    .collect()
}

#[test]
fn nearest_neighbours_agree_with_brute_force_on_random_data() {
    let _lock = seed_lock();
    tch::manual_seed(3);
    for (m, n, d) in [(1, 1, 3), (37, 53, 8), (64, 200, 64), (10, 1000, 2)] {
        let queries = Tensor::randn([m, d], (Kind::Double, Device::Cpu));
        let candidates = Tensor::randn([n, d], (Kind::Double, Device::Cpu));
        let (want, dist) = brute_force(&queries, &candidates);
        for blocks in block_shapes(m, n) {
            let found = nearest(&queries, &candidates, blocks).unwrap();
            assert_eq!(
                Vec::<i64>::try_from(&found.index).unwrap(),
                want,
                "{m}x{n}x{d} {blocks:?}"
            );
            let got = Vec::<f64>::try_from(&found.sq_distance).unwrap();
            for (g, w) in got.iter().zip(&dist) {
                assert!((g - w).abs() <= 1e-10 * (1.0 + w), "{g} vs {w}");
            }
        }
        // f32, the kind IMLE searches in: the same indices on this data
        let (qf, cf) = (
            queries.to_kind(Kind::Float),
            candidates.to_kind(Kind::Float),
        );
        let (want_f, _) = brute_force(&qf, &cf);
        let found = nearest(&qf, &cf, Blocks::within(1 << 10, m, n).unwrap()).unwrap();
        assert_eq!(Vec::<i64>::try_from(&found.index).unwrap(), want_f);
    }
}

#[test]
fn nearest_neighbour_ties_go_to_the_lowest_index_across_blocks() {
    // Integer points on a small grid: every distance is exact in f32, and many tie. Candidates
    // repeat (rows k and k + 40 are equal), so the lowest index must win wherever the block
    // boundaries fall.
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let grid = |n: usize, d: usize, rng: &mut rand::rngs::StdRng| -> Vec<f32> {
        (0..n * d)
            .map(|_| rng.random_range(-2..=2) as f32)
            .collect()
    };
    let d = 3;
    let base = grid(40, d, &mut rng);
    let mut cand = base.clone();
    cand.extend(&base);
    let candidates = Tensor::from_slice(&cand).reshape([80, d as i64]);
    let queries = Tensor::from_slice(&grid(50, d, &mut rng)).reshape([50, d as i64]);
    let (want, dist) = brute_force(&queries, &candidates);
    assert!(want.iter().all(|&k| k < 40), "a repeated candidate won");
    let mut ties = 0;
    for (i, &best) in dist.iter().enumerate() {
        let row = (&candidates - queries.get(i as i64))
            .square()
            .sum_dim_intlist(1, false, Kind::Double);
        ties += Vec::<f64>::try_from(&row)
            .unwrap()
            .iter()
            .filter(|&&v| v == best)
            .count()
            - 1;
    }
    assert!(
        ties >= 50,
        "the data should tie often, got {ties} extra minima"
    );
    for blocks in block_shapes(50, 80) {
        let found = nearest(&queries, &candidates, blocks).unwrap();
        assert_eq!(
            Vec::<i64>::try_from(&found.index).unwrap(),
            want,
            "{blocks:?}"
        );
        let got = Vec::<f32>::try_from(&found.sq_distance).unwrap();
        assert_eq!(got.iter().map(|&v| v as f64).collect::<Vec<_>>(), dist);
    }
}

#[test]
fn nearest_neighbour_search_refuses_bad_input() {
    let a = Tensor::zeros([3, 2], (Kind::Float, Device::Cpu));
    let blocks = Blocks {
        queries: 2,
        candidates: 2,
    };
    let err = |r: genflow::Result<genflow::glann::search::Nearest>| r.unwrap_err().to_string();
    assert!(err(nearest(
        &a,
        &Tensor::zeros([3, 4], (Kind::Float, Device::Cpu)),
        blocks
    ))
    .contains("[n, d]"));
    assert!(err(nearest(
        &a,
        &Tensor::zeros([0, 2], (Kind::Float, Device::Cpu)),
        blocks
    ))
    .contains("at least one"));
    assert!(err(nearest(&a, &a.to_kind(Kind::Double), blocks)).contains("same kind"));
    let nan = Tensor::full([1, 2], f64::NAN, (Kind::Float, Device::Cpu));
    assert!(err(nearest(&nan, &a, blocks)).contains("NaN"));
    assert!(err(nearest(
        &a,
        &a,
        Blocks {
            queries: 0,
            candidates: 2
        }
    ))
    .contains("1 x 1"));
    assert!(Blocks::within(0, 3, 3).is_err());
    let b = Blocks::within(1 << 19, 60000, 600000).unwrap();
    assert_eq!((b.queries, b.candidates), (512, 1024));
}

#[test]
fn projection_gaussian_and_pca_codes() {
    let _lock = seed_lock();
    tch::manual_seed(5);
    let mut z = Tensor::randn([200, 6], (Kind::Float, Device::Cpu)) * 3.0;
    let _ = z.get(7).zero_();
    project_to_sphere(&mut z).unwrap();
    assert!(sphere_deviation(&z).unwrap() < 1e-6);
    assert_eq!(
        Vec::<f32>::try_from(&z.get(7)).unwrap(),
        [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    );
    // the Gaussian of codes concentrated around one direction samples around it, on the sphere
    let mut near = Tensor::randn([500, 6], (Kind::Double, Device::Cpu)) * 0.05;
    let _ = near.select(1, 0).g_add_scalar_(1.0);
    project_to_sphere(&mut near).unwrap();
    let samples = CodeGaussian::fit(&near).unwrap().sample(1000).unwrap();
    assert!(sphere_deviation(&samples).unwrap() < 1e-12);
    let first = samples.select(1, 0).mean(Kind::Double).double_value(&[]);
    assert!(first > 0.98, "mean of the first coordinate {first}");
    // codes spanning fewer dimensions than d still fit (with jitter)
    let flat = Tensor::cat(&[near.narrow(1, 0, 3), near.narrow(1, 0, 3) * 0.0], 1);
    assert!(CodeGaussian::fit(&flat).unwrap().sample(3).is_ok());
    // PCA of images varying along 2 directions: the codes carry (almost) all the variance
    let n = 300;
    let coeffs = Tensor::rand([n, 2], (Kind::Double, Device::Cpu));
    let dirs = Tensor::rand([2, 30], (Kind::Double, Device::Cpu)) * 0.5;
    let images = (coeffs.matmul(&dirs) * 255.0)
        .round()
        .clamp(0.0, 255.0)
        .to_kind(Kind::Uint8);
    let images = images.view([n, 1, 5, 6]);
    let codes = pca_codes(&images, 256, 2, Device::Cpu).unwrap();
    let x = images.view([n, 30]).to_kind(Kind::Double) / 255.0;
    let centred = &x - x.mean_dim(0, true, Kind::Double);
    let total = centred.square().sum(Kind::Double).double_value(&[]);
    let kept = codes
        .to_kind(Kind::Double)
        .square()
        .sum(Kind::Double)
        .double_value(&[]);
    assert!(
        kept / total > 0.999 && kept / total < 1.0 + 1e-6,
        "PCA kept {kept} of {total}"
    );
    // more codes dimensions than the images have: the extra columns are zero
    let wide = pca_codes(&images, 256, 32, Device::Cpu).unwrap();
    assert_eq!(wide.size(), [n, 32]);
    assert_eq!(wide.narrow(1, 30, 2).abs().max().double_value(&[]), 0.0);
    assert!(pca_codes(&images, 256, 0, Device::Cpu).is_err());
}

// ----- a tiny GLANN run through the command line -------------------------------------------------

fn genflow(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_genflow"))
        .args(["--device", "cpu", "--threads", "1"])
        .args(args)
        .output()
        .expect("run genflow")
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "genflow failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Trains the tiny GLANN job into `run` with `extra` settings: 3 GLO steps of 8 images, then
/// IMLE rounds of 3 steps of 16 codes, on 40 synthetic MNIST-format images.
fn train_tiny(data: &Path, run: &Path, extra: &[&str], flags: &[&str]) -> std::process::Output {
    let dir = format!("data.dir=\"{}\"", data.display());
    let run_s = run.display().to_string();
    let mut args = vec!["train", "--config", "glann-mnist", "--out", &run_s];
    let sets = [
        dir.as_str(),
        "model.n_z=8",
        "model.generator.hidden=16",
        "model.generator.channels=[8, 4]",
        "model.mapper.noise_dim=4",
        "model.mapper.hidden=[8]",
        "train.steps=3",
        "train.batch_size=8",
        "train.imle_rounds=2",
        "train.imle_epochs=1",
        "train.imle_batch_size=16",
        "train.imle_candidates=3",
        "train.log_every=1",
        "eval.samples=20",
        "eval.encode_steps=30",
    ];
    for s in sets.iter().chain(extra) {
        args.extend(["--set", s]);
    }
    args.extend(flags);
    genflow(&args)
}

fn checkpoint(run: &Path) -> BTreeMap<String, Tensor> {
    genflow::train::checkpoint::load(&run.join("checkpoint.safetensors"))
        .unwrap()
        .0
}

fn same_bits(a: &Tensor, b: &Tensor) -> bool {
    a.size() == b.size() && a.eq_tensor(b).all().int64_value(&[]) == 1
}

#[test]
fn tiny_glann_run_keeps_codes_on_the_sphere_freezes_them_for_imle_and_resumes_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_synthetic_data(&data, "mnist", 40, 12);

    // GLO only, then GLO and IMLE: the IMLE phase changes neither the codes nor the generator
    let glo = tmp.path().join("glo");
    ok(train_tiny(&data, &glo, &["train.imle_rounds=0"], &[]));
    let straight = tmp.path().join("straight");
    ok(train_tiny(&data, &straight, &[], &[]));
    let (a, b) = (checkpoint(&glo), checkpoint(&straight));
    let codes = &b["codes"];
    assert_eq!(codes.size(), [40, 8]);
    assert!(sphere_deviation(codes).unwrap() < 1e-6);
    let mut frozen = 0;
    for (name, t) in &a {
        if name == "codes" || name.starts_with("generator.") {
            assert!(same_bits(t, &b[name]), "{name} moved during IMLE");
            frozen += 1;
        } else if name.starts_with("mapper.") && name.ends_with("weight") {
            assert!(!same_bits(t, &b[name]), "{name} did not train");
        }
    }
    assert!(frozen > 5);

    // the same run stopped after every step by a tiny time budget and resumed each time
    let split = tmp.path().join("split");
    let budget = "train.max_minutes=1e-9";
    ok(train_tiny(&data, &split, &[budget], &[]));
    let mut resumes = 0;
    while genflow::train::checkpoint::load(&split.join("checkpoint.safetensors"))
        .unwrap()
        .1
        .step
        < 9
    {
        let run_s = split.display().to_string();
        ok(genflow(&[
            "train", "--out", &run_s, "--resume", "--set", budget,
        ]));
        resumes += 1;
    }
    assert_eq!(resumes, 8, "one step per invocation");
    let c = checkpoint(&split);
    assert_eq!(b.keys().collect::<Vec<_>>(), c.keys().collect::<Vec<_>>());
    for (name, t) in &b {
        assert!(same_bits(t, &c[name]), "{name} differs after resuming");
    }

    // pictures, curves, evaluation and sampling
    for f in [
        "samples.png",
        "reconstructions.png",
        "interpolations.png",
        "curves.png",
    ] {
        assert!(straight.join(f).exists(), "missing {f}");
    }
    let run_s = straight.display().to_string();
    let report: serde_json::Value = serde_json::from_str(&ok(genflow(&[
        "eval",
        "--run",
        &run_s,
        "--json",
        "--samples",
        "0",
    ])))
    .unwrap();
    for key in [
        "recon_mse",
        "recon_loss",
        "imle_regression_mse",
        "glann_code_nn_sq_distance",
        "gaussian_code_nn_sq_distance",
    ] {
        let v = report[key].as_f64().unwrap_or(f64::NAN);
        assert!(v.is_finite() && v >= 0.0, "{key} in {report}");
    }
    assert!(report["codes_sphere_deviation"].as_f64().unwrap() < 1e-6);
    let png = tmp.path().join("s.png");
    ok(genflow(&[
        "sample",
        "--run",
        &run_s,
        "-n",
        "9",
        "--out",
        png.to_str().unwrap(),
    ]));
    assert!(png.exists());

    // encode: fitting codes to new images lowers their reconstruction error
    let images = data.join("mnist").join("t10k-images-idx3-ubyte");
    let latents = tmp.path().join("z.safetensors");
    let text = ok(genflow(&[
        "encode",
        "--run",
        &run_s,
        "--in",
        images.to_str().unwrap(),
        "--out",
        latents.to_str().unwrap(),
    ]));
    assert!(
        text.contains("fitted the codes of 12 items in 30 steps")
            && text.contains("reconstruction MSE"),
        "{text}"
    );
    let z = genflow::data::user_files::read_tensor(&latents, "z").unwrap();
    assert_eq!(z.size(), [12, 8]);
    assert!(sphere_deviation(&z).unwrap() < 1e-6);
    let mse = |steps: &str| -> f64 {
        let run = genflow::tasks::Run::open_with(
            &straight,
            Device::Cpu,
            Default::default(),
            &[steps.to_string()],
        )
        .unwrap();
        let x = genflow::tasks::files::read_items(run.data_kind(), &images).unwrap();
        let fitted = run.fit_codes(&x).unwrap();
        fitted.reconstruction_mse.iter().sum::<f64>() / 12.0
    };
    let (start, fitted) = (mse("eval.encode_steps=1"), mse("eval.encode_steps=100"));
    assert!(fitted < start, "fitting did not help: {start} -> {fitted}");
}
