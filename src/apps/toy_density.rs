//! i-ResNet density estimation on 2-D toy data: training, evaluation against the true density, and
//! sampling.

use crate::checkpoint;
use crate::config::RunConfig;
use crate::flows::{FlowContext, Transform};
use crate::models::VectorFlow;
use crate::optim::Optimizer;
use crate::plots;
use crate::train::{self, LoopOutcome, LoopSettings, Objective, CHECKPOINT_FILE};
use crate::{Error, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Points of the density grid on each axis for `density.png`.
const DENSITY_RESOLUTION: usize = 200;
/// Samples drawn for `samples.png`.
const PICTURE_SAMPLES: i64 = 20_000;

/// A seed that differs per step and per purpose, from the run's seed.
fn derived_seed(seed: u64, stream: u64, step: u64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream.wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ step
}

/// Streams of derived seeds.
const DATA_STREAM: u64 = 1;
const PROBE_STREAM: u64 = 2;
const TEST_STREAM: u64 = 3;
const SAMPLE_STREAM: u64 = 4;

/// Maximum likelihood on fresh batches from the toy density.
struct ToyObjective<'a> {
    model: &'a VectorFlow,
    config: &'a RunConfig,
    device: Device,
}

impl Objective for ToyObjective<'_> {
    fn loss(&mut self, step: u64) -> Result<(Tensor, Vec<(String, f64)>)> {
        let seed = self.config.seed;
        let x = self
            .config
            .data
            .density
            .sample(
                self.config.train.batch_size as usize,
                derived_seed(seed, DATA_STREAM, step),
            )
            .to_kind(Kind::Float)
            .to_device(self.device);
        let probe_seed = derived_seed(seed, PROBE_STREAM, step);
        tch::manual_seed(probe_seed as i64);
        let mut ctx = FlowContext::train(self.config.train.logdet, probe_seed);
        let nll = -self.model.flow.log_prob(&x, &mut ctx)?.mean(Kind::Float);
        Ok((nll, Vec::new()))
    }
}

/// Trains the model of `config` into `out_dir` (resuming from its checkpoint when `resume`), then
/// writes `density.png` and `samples.png`.
pub fn train(
    config: &RunConfig,
    out_dir: &Path,
    resume: bool,
    device: Device,
) -> Result<LoopOutcome> {
    tch::manual_seed(config.seed as i64);
    let model = VectorFlow::new(&config.model, 2, device)?;
    let mut optimizer = Optimizer::new(&model.vs, &config.optim)?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::file(out_dir, e.to_string()))?;
    let start = if resume {
        train::resume(&model.vs, &mut optimizer, out_dir)?
    } else {
        0
    };
    let settings = LoopSettings {
        steps: config.train.steps,
        checkpoint_every: config.train.checkpoint_every,
        log_every: config.train.log_every,
        out_dir: out_dir.to_path_buf(),
        config_toml: config.to_toml()?,
        log_grad_stats: config.optim.log_grad_stats,
    };
    crate::checkpoint::write_atomically(
        &out_dir.join("config.toml"),
        settings.config_toml.as_bytes(),
    )?;
    let mut objective = ToyObjective {
        model: &model,
        config,
        device,
    };
    let outcome = train::run(&model.vs, &mut optimizer, &mut objective, &settings, start)?;
    write_pictures(&model, config, out_dir, device)?;
    Ok(outcome)
}

/// Loads a run folder: its configuration and the trained model.
pub fn load_run(run_dir: &Path, device: Device) -> Result<(RunConfig, VectorFlow)> {
    if !run_dir.is_dir() {
        return Err(Error::file(
            run_dir,
            "run folder not found (train one with `genflow train --out DIR`)",
        ));
    }
    let path = run_dir.join(CHECKPOINT_FILE);
    let (tensors, meta) = checkpoint::load(&path)?;
    let config = RunConfig::from_toml(&meta.config_toml)?;
    let model = VectorFlow::new(&config.model, 2, device)?;
    checkpoint::restore_vars(&model.vs, &tensors, &path)?;
    Ok((config, model))
}

/// `log p(x)` in evaluation mode with the configured estimator, without a graph.
fn log_prob_eval(model: &VectorFlow, config: &RunConfig, x: &Tensor) -> Result<Tensor> {
    let mut ctx = FlowContext::eval(config.eval.logdet, config.seed);
    let _guard = tch::no_grad_guard();
    model.flow.log_prob(x, &mut ctx)
}

fn write_pictures(
    model: &VectorFlow,
    config: &RunConfig,
    out_dir: &Path,
    device: Device,
) -> Result<()> {
    let density = config.data.density;
    let data = density.sample(
        PICTURE_SAMPLES as usize,
        derived_seed(config.seed, TEST_STREAM, 0),
    );
    let mut log_density = |points: &Tensor| -> Result<Tensor> {
        log_prob_eval(
            model,
            config,
            &points.to_kind(Kind::Float).to_device(device),
        )
        .map(|t| t.to_device(Device::Cpu))
    };
    plots::save_density_comparison(
        &mut log_density,
        &data,
        density.plot_range(),
        DENSITY_RESOLUTION,
        &out_dir.join("density.png"),
    )?;
    let samples = draw_samples(model, config, PICTURE_SAMPLES, device)?;
    plots::save_scatter_histogram(&samples, density.plot_range(), &out_dir.join("samples.png"))
}

/// `n` model samples (CPU, f32).
pub fn draw_samples(
    model: &VectorFlow,
    config: &RunConfig,
    n: i64,
    device: Device,
) -> Result<Tensor> {
    tch::manual_seed(derived_seed(config.seed, SAMPLE_STREAM, 0) as i64);
    let mut ctx = FlowContext::eval(config.eval.logdet, config.seed);
    ctx.inverse = config.eval.inverse;
    let _guard = tch::no_grad_guard();
    Ok(model
        .flow
        .sample(n, 1.0, Kind::Float, device, &mut ctx)?
        .to_device(Device::Cpu))
}

/// The evaluation report of a toy run (`genflow eval --json`).
pub fn evaluate(run_dir: &Path, device: Device) -> Result<serde_json::Value> {
    let (config, model) = load_run(run_dir, device)?;
    let density = config.data.density;
    let test = density.sample(
        config.data.test_size,
        derived_seed(config.seed, TEST_STREAM, 1),
    );
    let x = test.to_kind(Kind::Float).to_device(device);
    let mut nll_sum = 0.0;
    for chunk in x.split(4096, 0) {
        nll_sum -= log_prob_eval(&model, &config, &chunk)?
            .to_kind(Kind::Double)
            .sum(Kind::Double)
            .double_value(&[]);
    }
    let test_nll = nll_sum / config.data.test_size as f64;
    let true_nll = density.log_density(&test)?.map(|lp| {
        -lp.to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[])
    });
    let mut ctx = FlowContext::eval(config.eval.logdet, config.seed);
    ctx.inverse = config.eval.inverse;
    let (round_trip_err, stats) = {
        let _guard = tch::no_grad_guard();
        let (z, _) = model.flow.transform.forward(&x, &mut ctx)?;
        let back = model.flow.transform.inverse(&z, &mut ctx)?;
        ((back - &x).abs().max().double_value(&[]), ctx.inverse_stats)
    };
    let lipschitz_max = model
        .flow
        .transform
        .residual_nets()
        .iter()
        .map(|g| g.lipschitz_bound())
        .collect::<Result<Vec<f64>>>()?
        .into_iter()
        .fold(0.0, f64::max);
    let mut report = serde_json::json!({
        "density": density.to_string(),
        "test_size": config.data.test_size,
        "test_nll_nats": test_nll,
        "inverse_max_abs_err": round_trip_err,
        "inverse_iters_max": stats.max_iters,
        "inverse_residual_max": stats.max_residual,
        "lipschitz_max": lipschitz_max,
        "lipschitz_target": config.model.spectral.coeff.powi(config.model.hidden.len() as i32 + 1),
    });
    if let Some(t) = true_nll {
        report["true_nll_nats"] = serde_json::json!(t);
        report["nll_gap_nats"] = serde_json::json!(test_nll - t);
    }
    Ok(report)
}

/// Writes `n` samples of a run to a `.png` (2-D histogram) or `.csv` file.
pub fn sample(run_dir: &Path, n: i64, out: &Path, device: Device) -> Result<()> {
    let (config, model) = load_run(run_dir, device)?;
    let samples = draw_samples(&model, &config, n, device)?;
    match out.extension().and_then(|e| e.to_str()) {
        Some("png") => {
            plots::save_scatter_histogram(&samples, config.data.density.plot_range(), out)
        }
        Some("csv") => {
            let values = Vec::<f32>::try_from(samples.reshape([-1]))?;
            let mut text = String::from("x,y\n");
            for p in values.chunks(2) {
                text.push_str(&format!("{},{}\n", p[0], p[1]));
            }
            checkpoint::write_atomically(out, text.as_bytes())
        }
        _ => Err(Error::config(format!(
            "--out {} must end in .png or .csv",
            out.display()
        ))),
    }
}
