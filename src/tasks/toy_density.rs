//! `task = "toy-density"`: i-ResNet density estimation of a 2-D toy distribution (SPEC sections 1
//! and 7): training on fresh batches, evaluation against the true density, density maps, samples,
//! and log-densities, encoding and decoding of one's own points.

use super::report::InvertibilityReport;
use super::{
    DataKind, Density, Invertible, ItemConvergence, LogProb, SampleOptions, Task, TaskSpec,
    Training,
};
use crate::config::RunConfig;
use crate::data::toy::{ToyDataConfig, ToyDensity};
use crate::flows::{FlowContext, FlowEvalConfig, FlowTrainConfig, Transform};
use crate::linalg::logdet::LogDetEstimator;
use crate::models::{VectorFlow, VectorFlowConfig};
use crate::nn::ResidualNet;
use crate::plots;
use crate::seeds::{derived_seed, Stream};
use crate::train::Objective;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Points of the density grid on each axis for `density.png`.
const DENSITY_RESOLUTION: usize = 200;
/// Samples drawn for `samples.png`.
const PICTURE_SAMPLES: i64 = 20_000;
/// Points per evaluation batch.
const EVAL_CHUNK: i64 = 4096;
/// Model samples drawn by `genflow eval` for the sample metrics.
const SAMPLE_METRICS: i64 = 10_000;
/// The dimension of the toy data.
const DIM: i64 = 2;

/// The configuration of a toy-density run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToyDensityConfig {
    pub data: ToyDataConfig,
    pub model: VectorFlowConfig,
    #[serde(default)]
    pub eval: FlowEvalConfig,
    /// The flows' part of `[train]`: the log-det estimator of the training loss.
    #[serde(default)]
    pub train: FlowTrainConfig,
}

impl TaskSpec for ToyDensityConfig {
    const OUTPUTS: &'static [&'static str] = &["density.png", "samples.png"];

    fn validate(&self, run: &RunConfig) -> Result<()> {
        self.data.validate()?;
        self.model.validate()?;
        self.eval.validate()?;
        self.train.logdet.validate()?;
        run.train.plan(None).map(|_| ())
    }

    fn build(&self, run: &RunConfig, device: Device) -> Result<Box<dyn Task>> {
        let vs = VarStore::new(device);
        let model = VectorFlow::new(&vs.root(), &self.model, DIM)?;
        Ok(Box::new(ToyDensityTask {
            config: self.clone(),
            vs,
            model,
            device,
            seed: run.seed,
            kind: run.dtype.kind(),
        }))
    }
}

/// A toy-density model with its configuration.
struct ToyDensityTask {
    config: ToyDensityConfig,
    vs: VarStore,
    model: VectorFlow,
    device: Device,
    /// The run's seed (evaluation contexts are seeded with it).
    seed: u64,
    /// The floating-point type of the model.
    kind: Kind,
}

/// The report of `genflow eval` on a toy-density run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToyDensityReport {
    pub density: String,
    pub test_size: usize,
    /// Mean negative log-likelihood of the test points (nats).
    pub test_nll_nats: f64,
    /// The same under the true density, where it is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub true_nll_nats: Option<f64>,
    /// `test_nll_nats - true_nll_nats`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nll_gap_nats: Option<f64>,
    #[serde(flatten)]
    pub invertibility: InvertibilityReport,
    /// `c^L`, the bound every block's `Lip(g)` must respect.
    pub lipschitz_target: f64,
    /// Model samples drawn for the sample metrics below.
    pub samples: usize,
    /// `-mean log p_data(x)` of the model's samples (those inside the support) under the true
    /// density, where it is known (a sample-quality measure: low when samples fall where the data
    /// lives).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples_true_nll_nats: Option<f64>,
    /// The share of samples where the true density is positive (1 for densities of unbounded
    /// support); `samples_true_nll_nats` is over these.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples_in_support: Option<f64>,
    /// For 8gaussians: modes holding at least 1% of the samples as high-quality samples (within 3
    /// standard deviations of their nearest centre), and the share of high-quality samples
    /// (SPEC section 6).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modes_covered: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub high_quality_fraction: Option<f64>,
}

/// Maximum likelihood on fresh batches from the toy density (in data-parallel training, each
/// rank on its rows of the step's global batch).
struct ToyObjective<'a> {
    model: &'a VectorFlow,
    density: ToyDensity,
    seed: u64,
    batch_size: usize,
    logdet: LogDetEstimator,
    device: Device,
    kind: Kind,
}

impl Objective for ToyObjective<'_> {
    fn loss(&mut self, step: u64) -> Result<(Tensor, Vec<(String, f64)>)> {
        let x = self
            .density
            .sample(self.batch_size, derived_seed(self.seed, Stream::Data, step))
            .to_kind(self.kind)
            .to_device(self.device);
        let shard = crate::distributed::data_parallel::shard(x.size()[0])?;
        let x = shard.rows(&x);
        let probe_seed = derived_seed(self.seed, Stream::Probe, step);
        tch::manual_seed(probe_seed as i64);
        let mut ctx = FlowContext::train(self.logdet, probe_seed).with_shard(shard);
        let nll = -self.model.flow.log_prob(&x, &mut ctx)?.mean(self.kind);
        Ok((shard.weighted(&nll), Vec::new()))
    }
}

impl ToyDensityTask {
    /// `log p(x)` in evaluation mode with the configured estimator, without a graph, in chunks.
    fn log_prob_eval(&self, seed: u64, x: &Tensor) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let chunks = x
            .split(EVAL_CHUNK, 0)
            .iter()
            .map(|chunk| {
                let mut ctx = FlowContext::eval(self.config.eval.logdet, seed);
                self.model.flow.log_prob(&chunk.to_device(self.device), &mut ctx)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&chunks, 0).to_device(Device::Cpu))
    }

    /// `n` model samples (CPU, f32) from `seed` at `temperature`.
    fn draw_samples(&self, n: i64, seed: u64, temperature: f64) -> Result<Tensor> {
        tch::manual_seed(derived_seed(seed, Stream::Sample, 0) as i64);
        let mut ctx = self.config.eval.context(seed);
        let _guard = tch::no_grad_guard();
        Ok(self
            .model
            .flow
            .sample(n, temperature, self.kind, self.device, &mut ctx)?
            .to_device(Device::Cpu)
            .to_kind(Kind::Float))
    }

    /// Points `[n, 2]` in the model's dtype on its device, or an error naming the expected shape.
    fn points(&self, x: &Tensor) -> Result<Tensor> {
        super::checked_points(x, DIM, self.kind, self.device, "a toy-density model")
    }
}

impl Task for ToyDensityTask {
    fn vars(&self) -> &VarStore {
        &self.vs
    }

    fn data_kind(&self) -> DataKind {
        DataKind::Vectors {
            dim: DIM,
            plot_range: self.config.data.density.plot_range(),
        }
    }

    fn training(&self, run: &RunConfig) -> Result<Training<'_>> {
        Ok(Training {
            objective: Box::new(ToyObjective {
                model: &self.model,
                density: self.config.data.density,
                seed: run.seed,
                batch_size: run.train.batch_size as usize,
                logdet: self.config.train.logdet,
                device: self.device,
                kind: self.kind,
            }),
            plan: run.train.plan(None)?,
        })
    }

    fn write_pictures(&self, run: &RunConfig, out_dir: &Path) -> Result<()> {
        let density = self.config.data.density;
        let data = density.sample(
            PICTURE_SAMPLES as usize,
            derived_seed(run.seed, Stream::Test, 0),
        );
        let mut log_density = |points: &Tensor| self.log_prob_eval(run.seed, &points.to_kind(self.kind));
        plots::save_density_comparison(
            &mut log_density,
            &data,
            density.plot_range(),
            DENSITY_RESOLUTION,
            &out_dir.join("density.png"),
        )?;
        let samples = self.draw_samples(PICTURE_SAMPLES, run.seed, self.config.eval.temperature)?;
        plots::save_scatter_histogram(&samples, density.plot_range(), &out_dir.join("samples.png"))?;
        super::write_curves(out_dir)
    }

    fn evaluate(&self, run: &RunConfig) -> Result<serde_json::Value> {
        let density = self.config.data.density;
        let test_size = self.config.data.test_size;
        let test = density.sample(test_size, derived_seed(run.seed, Stream::Test, 1));
        let x = test.to_kind(self.kind).to_device(self.device);
        let test_nll = -self
            .log_prob_eval(run.seed, &x)?
            .to_kind(Kind::Double)
            .sum(Kind::Double)
            .double_value(&[])
            / test_size as f64;
        let true_nll = density.log_density(&test)?.map(|lp| {
            -lp.to_kind(Kind::Double)
                .mean(Kind::Double)
                .double_value(&[])
        });
        let mut ctx = self.config.eval.context(run.seed);
        let round_trip_err = {
            let _guard = tch::no_grad_guard();
            let (z, _) = self.model.flow.transform.forward(&x, &mut ctx)?;
            let back = self.model.flow.transform.inverse(&z, &mut ctx)?;
            (back - &x).abs().max().double_value(&[])
        };
        let samples = self.draw_samples(SAMPLE_METRICS, run.seed, self.config.eval.temperature)?;
        let true_log_p = density.log_density(&samples.to_kind(Kind::Double))?;
        // samples outside a bounded support (checkerboard) have log density -inf: the NLL is
        // that of the samples inside, beside the share that is inside
        let inside = true_log_p.as_ref().map(|lp| lp.isfinite());
        let samples_in_support = inside
            .as_ref()
            .map(|m| m.to_kind(Kind::Double).mean(Kind::Double).double_value(&[]));
        let samples_true_nll_nats = true_log_p.zip(inside).and_then(|(lp, m)| {
            let n = m.sum(Kind::Int64).int64_value(&[]);
            (n > 0).then(|| -lp.masked_select(&m).sum(Kind::Double).double_value(&[]) / n as f64)
        });
        let modes = match density {
            ToyDensity::EightGaussians => Some(crate::metrics::eight_gaussians_modes(&samples)?),
            _ => None,
        };
        let model = &self.config.model;
        let report = ToyDensityReport {
            density: density.to_string(),
            test_size,
            test_nll_nats: test_nll,
            true_nll_nats: true_nll,
            nll_gap_nats: true_nll.map(|t| test_nll - t),
            invertibility: InvertibilityReport::new(
                round_trip_err,
                test_size as i64,
                &ctx,
                &self.residual_nets(),
            )?,
            lipschitz_target: model.spectral.coeff.powi(model.hidden.len() as i32 + 1),
            samples: SAMPLE_METRICS as usize,
            samples_true_nll_nats,
            samples_in_support,
            modes_covered: modes.as_ref().map(|m| m.modes_covered),
            high_quality_fraction: modes.as_ref().map(|m| m.high_quality_fraction),
        };
        serde_json::to_value(report).map_err(|e| Error::config(e.to_string()))
    }

    fn residual_nets(&self) -> Vec<&ResidualNet> {
        self.model.flow.transform.residual_nets()
    }

    fn sample(&self, run: &RunConfig, options: &SampleOptions) -> Result<Tensor> {
        let seed = options.seed.unwrap_or(run.seed);
        let temperature = options.temperature.unwrap_or(self.config.eval.temperature);
        self.draw_samples(options.n, seed, temperature)
    }

    fn default_sample_count(&self) -> i64 {
        10_000
    }

    fn density(&self) -> Option<&dyn Density> {
        Some(self)
    }

    fn invertible(&self) -> Option<&dyn Invertible> {
        Some(self)
    }
}

impl Density for ToyDensityTask {
    fn log_prob(&self, x: &Tensor) -> Result<LogProb> {
        let x = self.points(x)?;
        let log_prob = self.log_prob_eval(self.seed, &x)?.to_kind(Kind::Double);
        Ok(LogProb {
            log_prob: Vec::<f64>::try_from(log_prob)?,
            bits_per_dim: None,
        })
    }
}

impl Invertible for ToyDensityTask {
    fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.points(x)?;
        let mut ctx = FlowContext::without_logdet(false);
        let _guard = tch::no_grad_guard();
        Ok(self.model.flow.transform.forward(&x, &mut ctx)?.0.to_device(Device::Cpu))
    }

    fn decode(&self, z: &Tensor) -> Result<(Tensor, Vec<ItemConvergence>)> {
        let z = self.points(z)?;
        let mut ctx = self.config.eval.context(self.seed);
        let _guard = tch::no_grad_guard();
        let x = self.model.flow.transform.inverse(&z, &mut ctx)?;
        Ok((x.to_device(Device::Cpu), item_convergence(&ctx, z.size()[0])?))
    }

    fn latent_shape(&self) -> Vec<i64> {
        vec![DIM]
    }
}

/// The per-item convergence of the inversions recorded in `ctx` for a batch of `n` items (all
/// converged in zero iterations when the model inverted nothing by iteration).
pub(crate) fn item_convergence(ctx: &FlowContext, n: i64) -> Result<Vec<ItemConvergence>> {
    match &ctx.item_stats {
        Some(stats) => Ok(stats
            .rows()?
            .into_iter()
            .map(|(iterations, residual, converged)| ItemConvergence {
                iterations,
                residual,
                converged,
            })
            .collect()),
        None => Ok(vec![
            ItemConvergence {
                iterations: 0,
                residual: 0.0,
                converged: true,
            };
            n as usize
        ]),
    }
}
