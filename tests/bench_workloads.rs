//! `genflow bench`: every workload runs at tiny sizes and reports well-formed results in the JSON
//! layout shared with `benches/pytorch/iresnet_bench.py`. No timings are checked.
use clap::Parser;
use genflow::bench::plot::{plot_scaling, ScalingPoint, ScalingTable};
use genflow::bench::timing::Stats;
use genflow::bench::{adam_step, run, BenchArgs, BenchConfig, BenchReport, Workload};
use genflow::device::ComputeArgs;
use genflow::linalg::logdet::Backend;
use tch::nn::{OptimizerConfig, VarStore};
use tch::{Device, Kind};

/// libtorch's generator and thread settings are global: tests that run workloads hold this lock.
fn lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn check_timings(report: &BenchReport) {
    for w in &report.workloads {
        let (med, min, max) = (w.median.unwrap(), w.min.unwrap(), w.max.unwrap());
        assert!(
            min.is_finite() && max.is_finite(),
            "{}: {min} {max}",
            w.name
        );
        assert!(
            min <= med && med <= max,
            "{}: min {min} median {med} max {max}",
            w.name
        );
        assert_eq!(w.samples, 2, "{}", w.name);
        assert_eq!(w.unit.as_deref(), Some("ms"));
        let rss = w.peak_rss_mb.expect("peak RSS on Linux CPU");
        assert!(rss > 1.0, "{}: peak RSS {rss} MB", w.name);
        assert!(w.rss_increase_mb.unwrap() >= 0.0);
    }
}

#[test]
fn every_workload_runs_and_round_trips_through_json() {
    let _guard = lock();
    let report = run(&BenchConfig::tiny()).unwrap();
    let names: Vec<&str> = report.workloads.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "block-step",
            "block-forward",
            "block-inverse",
            "logdet-term-tangent",
            "logdet-term-vjp",
            "toy-step",
            "mnist-step",
            "gan-step",
            "ogan-step",
            "matmul-1024",
            "glo-step",
            "imle-search"
        ]
    );
    check_timings(&report);
    assert!(report.workloads.iter().all(|w| w.skipped.is_none()));

    let json = report.to_json().unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["implementation"], "genflow");
    assert_eq!(value["method"], "tangent");
    assert_eq!(value["device"], "cpu");
    assert_eq!(
        value["threads"].as_i64().unwrap(),
        tch::get_num_threads() as i64
    );
    assert_eq!(value["config"]["hidden"], 4);
    assert_eq!(value["workloads"][9]["n"], 32);
    assert_eq!(value["workloads"][7]["update"], "alternating");
    assert_eq!(value["workloads"][8]["update"], "single-loss");
    // serde_json's float parsing may differ in the last bit, so compare parsed values
    let back: BenchReport = serde_json::from_str(&json).unwrap();
    assert_eq!(serde_json::to_value(&back).unwrap(), value);
}

#[test]
fn workload_specific_numbers_are_consistent() {
    let _guard = lock();
    let config = BenchConfig {
        workloads: vec![Workload::BlockInverse, Workload::Matmul],
        ..BenchConfig::tiny()
    };
    let report = run(&config).unwrap();
    let inverse = &report.workloads[0];
    let iterations = inverse.extra["iterations"].as_u64().unwrap();
    assert!((1..=100).contains(&iterations), "{iterations} iterations");
    // converged: the last step's relative change is below 1 (atol = rtol = 1e-5), so with
    // Lip(g) <= 0.9^3 the reconstruction is within a few 1e-5 of the input
    assert!(inverse.extra["residual"].as_f64().unwrap() < 1.0);
    assert!(inverse.extra["error"].as_f64().unwrap() < 1e-3);
    let per_iter = inverse.extra["per_iteration_ms"].as_f64().unwrap();
    assert!((per_iter * iterations as f64 - inverse.median.unwrap()).abs() < 1e-9);

    let mm = &report.workloads[1];
    let expected = 2.0 * 32f64.powi(3) / (mm.median.unwrap() * 1e-3) / 1e9;
    assert!((mm.extra["gflops"].as_f64().unwrap() - expected).abs() < 1e-9 * expected);
}

#[test]
fn block_step_runs_with_the_vjp_backend() {
    let _guard = lock();
    let config = BenchConfig {
        workloads: vec![Workload::BlockStep, Workload::BlockForward],
        backend: Backend::Vjp,
        ..BenchConfig::tiny()
    };
    let report = run(&config).unwrap();
    assert_eq!(report.method, "vjp");
    check_timings(&report);
}

#[test]
fn pytorch_reference_json_has_the_same_layout() {
    // written by: benches/pytorch/iresnet_bench.py --method tangent --json --batch 2 --channels 2
    //   --size 4 --hidden 4 --terms 2 --warmup 1 --samples 2
    // and benches/pytorch/glann_bench.py --json --threads 1 --codes 50 --candidates 300 --batch 4
    //   --warmup 1 --samples 2
    let mut names = Vec::new();
    for fixture in ["bench_pytorch_tiny.json", "bench_glann_pytorch_tiny.json"] {
        let text = std::fs::read_to_string(format!("tests/fixtures/{fixture}")).unwrap();
        let report: BenchReport = serde_json::from_str(&text).unwrap();
        assert_eq!(report.implementation, "pytorch");
        names.extend(report.workloads.iter().map(|w| w.name.clone()));
    }
    assert_eq!(names, run_names());
}

/// The GLANN search finds the same neighbours as its PyTorch twin on the same seeded data (the
/// fixture's `index_sum`, from `glann_bench.py` at the tiny sizes).
#[test]
fn imle_search_matches_the_pytorch_twin() {
    let _guard = lock();
    let text = std::fs::read_to_string("tests/fixtures/bench_glann_pytorch_tiny.json").unwrap();
    let twin: BenchReport = serde_json::from_str(&text).unwrap();
    let config = BenchConfig {
        workloads: vec![Workload::ImleSearch],
        ..BenchConfig::tiny()
    };
    let ours = run(&config).unwrap();
    let sum = |r: &BenchReport| {
        r.workloads
            .iter()
            .find(|w| w.name == "imle-search")
            .and_then(|w| w.extra["index_sum"].as_i64())
    };
    assert!(sum(&ours).is_some());
    assert_eq!(sum(&ours), sum(&twin));
}

#[test]
fn pytorch_gan_json_has_the_same_layout() {
    // written by: benches/pytorch/gan_bench.py --json --threads 1 --batch 2 --warmup 1 --samples 2
    let text = std::fs::read_to_string("tests/fixtures/bench_pytorch_gan_tiny.json").unwrap();
    let report: BenchReport = serde_json::from_str(&text).unwrap();
    assert_eq!(report.implementation, "pytorch");
    let names: Vec<&str> = report.workloads.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, [Workload::GanStep.name(), Workload::OganStep.name()]);
    let updates: Vec<&str> = report
        .workloads
        .iter()
        .map(|w| w.extra["update"].as_str().unwrap())
        .collect();
    assert_eq!(updates, ["alternating", "single-loss"]);
}

/// The result names genflow reports for the i-ResNet and GLANN workloads (the GAN workloads have
/// their own PyTorch script), without running anything.
fn run_names() -> Vec<&'static str> {
    Workload::ALL
        .iter()
        .flat_map(|w| match w {
            Workload::LogdetTerms => vec!["logdet-term-tangent", "logdet-term-vjp"],
            Workload::GanStep | Workload::OganStep => vec![],
            other => vec![other.name()],
        })
        .collect()
}

#[test]
fn stats_are_exact() {
    let s = Stats::of(&[3.0, 1.0, 2.0]).unwrap();
    assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
    let s = Stats::of(&[4.0, 1.0, 2.0, 10.0]).unwrap();
    assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 10.0));
    assert!(Stats::of(&[]).is_err());
    assert!(Stats::of(&[1.0, f64::NAN]).is_err());
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    compute: ComputeArgs,
    #[command(flatten)]
    args: BenchArgs,
}

fn config_from(flags: &[&str]) -> genflow::Result<BenchConfig> {
    let argv = std::iter::once("bench").chain(flags.iter().copied());
    let cli = Cli::try_parse_from(argv).unwrap();
    cli.args.to_config(&cli.compute)
}

#[test]
fn flags_become_a_validated_config() {
    let c = config_from(&[]).unwrap();
    assert_eq!(c.workloads, Workload::ALL.to_vec());
    assert_eq!(
        (c.block.batch, c.block.channels, c.block.size),
        (64, 16, 28)
    );
    assert_eq!((c.block.hidden, c.block.terms), (64, 5));
    let c = config_from(&[
        "--workload",
        "block-step",
        "--workload",
        "matmul-1024",
        "--hidden",
        "32",
    ])
    .unwrap();
    assert_eq!(c.workloads, vec![Workload::BlockStep, Workload::Matmul]);
    assert_eq!(c.block.hidden, 32);
    let c = config_from(&[
        "--workload",
        "imle-search",
        "--codes",
        "600",
        "--candidates",
        "6000",
    ])
    .unwrap();
    assert_eq!(c.workloads, vec![Workload::ImleSearch]);
    assert_eq!(
        (c.glann.codes, c.glann.candidates, c.glann.batch),
        (600, 6000, 128)
    );
    assert!(config_from(&["--candidates", "0"]).is_err());
    assert_eq!(
        config_from(&["--backend", "vjp"]).unwrap().backend,
        Backend::Vjp
    );

    let err = config_from(&["--workload", "nope"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown workload 'nope'") && err.contains("block-step"),
        "{err}"
    );
    let err = config_from(&["--device", "tpu"]).unwrap_err().to_string();
    assert!(err.contains("unknown device"), "{err}");
    assert!(config_from(&["--terms", "0"]).is_err());
    assert!(config_from(&["--samples", "0"]).is_err());
    if !tch::Cuda::is_available() {
        let err = config_from(&["--device", "cuda"]).unwrap_err().to_string();
        assert!(err.contains("CUDA device"), "{err}");
    }
}

#[test]
fn adam_step_clears_old_gradients_before_backward() {
    let vs = VarStore::new(Device::Cpu);
    let p = vs.root().var("p", &[1], tch::nn::Init::Const(1.0));
    let mut opt = tch::nn::Adam::default().build(&vs, 1e-3).unwrap();
    (&p * 1000.0).sum(Kind::Float).backward(); // stale gradient 1000
    adam_step(&mut opt, &p.square().sum(Kind::Float)).unwrap();
    // d(p^2)/dp = 2 at p = 1: the stale 1000 was cleared
    assert!((p.grad().double_value(&[0]) - 2.0).abs() < 1e-6);
    // Adam's first step moves by lr * m_hat / (sqrt(v_hat) + eps) = lr (up to eps / |g|)
    assert!((p.double_value(&[0]) - (1.0 - 1e-3)).abs() < 1e-6);
}

#[test]
fn scaling_plot_is_a_png_of_the_requested_size() {
    let point = |implementation: &str, hidden, terms, median: f64| ScalingPoint {
        implementation: implementation.into(),
        hidden,
        terms,
        median,
        min: median * 0.9,
        max: median * 1.1,
    };
    let mut points = Vec::new();
    for (imp, f) in [
        ("genflow", 1.0),
        ("pytorch-official", 1.4),
        ("pytorch-tangent", 1.1),
    ] {
        for h in [32, 64, 128, 256] {
            points.push(point(imp, h, 5, f * h as f64 * 3.0));
        }
        for t in [1, 10] {
            points.push(point(imp, 64, t, f * (100.0 + 40.0 * t as f64)));
        }
    }
    let table = ScalingTable {
        device: "cpu".into(),
        threads: 2,
        terms: 5,
        hidden: 64,
        points,
    };
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("scaling.json");
    std::fs::write(&json, serde_json::to_string(&table).unwrap()).unwrap();
    let loaded = ScalingTable::load(&json).unwrap();
    assert_eq!(loaded.points.len(), table.points.len());
    assert_eq!(loaded.points[17].implementation, "pytorch-tangent");
    assert_eq!(
        (loaded.points[17].hidden, loaded.points[17].terms),
        (64, 10)
    );
    let png = dir.path().join("scaling.png");
    plot_scaling(&loaded, &png).unwrap();
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (1200, 480));
    // something besides the white background was drawn
    let rgb = img.to_rgb8();
    assert!(rgb.pixels().filter(|p| p.0 != [255, 255, 255]).count() > 10_000);

    let empty = ScalingTable {
        points: vec![],
        ..table
    };
    assert!(plot_scaling(&empty, &png).is_err());
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{}").unwrap();
    let err = ScalingTable::load(&bad).unwrap_err().to_string();
    assert!(err.contains("bad.json"), "{err}");
}
