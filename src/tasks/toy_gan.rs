//! `task = "toy-gan"`: a GAN of MLPs on a 2-D toy distribution (SPEC sections 3 and 6), trained on
//! fresh batches with the alternating or the single-loss update ([`crate::gan::update`]).
//!
//! Data-parallel training (`genflow launch`, `torchrun`) splits each global batch of fresh
//! points over the ranks ([`crate::gan::update`]).
//!
//! Evaluation draws `data.test_size` samples and, on `8gaussians`, reports the modes covered and
//! the share of high-quality samples ([`crate::metrics::eight_gaussians_modes`]); an O-GAN
//! (`model.encoder = true`) also reports `rho(z, E(G(z)))` on fresh latents and the
//! reconstruction error `|x - G(N(E(x)))|^2` of test points, and encodes points for
//! `genflow encode`.
//!
//! ```
//! use genflow::tasks::{JobConfig, Run, TrainOptions};
//! let dir = tempfile::tempdir()?;
//! let job = JobConfig::resolve("gan-toy", &[
//!     "model.hidden=[16]".into(), "train.steps=5".into(), "train.batch_size=32".into(),
//!     "data.test_size=200".into(), "train.update=\"single-loss\"".into(),
//! ])?;
//! genflow::tasks::train(&job, dir.path(), &TrainOptions::default())?;
//! let report = Run::open(dir.path(), tch::Device::Cpu, Default::default())?.evaluate()?;
//! assert!(report["modes_covered"].as_u64().unwrap() <= 8);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::{DataKind, Encoder, SampleOptions, Task, TaskSpec, Training};
use crate::config::RunConfig;
use crate::data::toy::{ToyDataConfig, ToyDensity};
use crate::gan::{
    is_generator, Gan, GanLosses, GanObjective, GanTrainConfig, MlpGanConfig, RealData,
};
use crate::metrics::{eight_gaussians_modes, reconstruction_mse, ToyModes};
use crate::plots;
use crate::seeds::{derived_seed, Stream};
use crate::train::Evaluation;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// The dimension of the toy data.
const DIM: i64 = 2;
/// Samples drawn for `samples.png`.
const PICTURE_SAMPLES: i64 = 20_000;

/// The configuration of a toy-GAN run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToyGanConfig {
    /// The toy density; `test_size` samples are drawn by each evaluation.
    pub data: ToyDataConfig,
    pub model: MlpGanConfig,
    /// The GAN's part of `[train]`: update rule, loss, penalty, O-GAN weight.
    #[serde(default)]
    pub train: GanTrainConfig,
}

impl TaskSpec for ToyGanConfig {
    const OUTPUTS: &'static [&'static str] = &["samples.png"];

    fn validate(&self, run: &RunConfig) -> Result<()> {
        self.data.validate()?;
        self.model.validate()?;
        self.train.validate(self.model.encoder)?;
        run.train.plan(None).map(|_| ())
    }

    fn build(&self, _run: &RunConfig, device: Device) -> Result<Box<dyn Task>> {
        let vs = VarStore::new(device);
        let gan = Gan::mlp(&vs.root(), &self.model, DIM)?;
        Ok(Box::new(ToyGanTask {
            config: self.clone(),
            vs,
            gan,
            device,
        }))
    }
}

/// A toy GAN with its configuration.
struct ToyGanTask {
    config: ToyGanConfig,
    vs: VarStore,
    gan: Gan,
    device: Device,
}

/// The report of `genflow eval` on a toy-GAN run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToyGanReport {
    pub density: String,
    /// `"alternating"` or `"single-loss"`.
    pub update: String,
    /// Model samples evaluated.
    pub samples: usize,
    /// Modes covered and high-quality samples (8gaussians only).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub modes: Option<ToyModes>,
    /// O-GAN: mean `rho(z, E(G(z)))` over `samples` fresh latents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rho_mean: Option<f64>,
    /// O-GAN: mean squared error of `G(N(E(x)))` on `samples` test points.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recon_mse: Option<f64>,
}

/// Fresh batches of the toy density, and the periodic evaluation of the modes.
struct ToyBatches {
    density: ToyDensity,
    seed: u64,
    batch_size: usize,
    test_size: i64,
    device: Device,
    /// The floating-point type of the model.
    kind: Kind,
}

impl RealData for ToyBatches {
    fn batch(&mut self, step: u64) -> Result<Tensor> {
        let seed = derived_seed(self.seed, Stream::Data, step);
        Ok(self
            .density
            .sample(self.batch_size, seed)
            .to_kind(self.kind)
            .to_device(self.device))
    }

    /// On 8gaussians: `test_modes_covered` and `test_high_quality_fraction`; the score to
    /// minimise is `(8 - modes) + (1 - high-quality fraction)`.
    fn evaluate(&mut self, gan: &Gan, _step: u64) -> Result<Option<Evaluation>> {
        if self.density != ToyDensity::EightGaussians {
            return Ok(None);
        }
        let modes = eight_gaussians_modes(&gan.sample(self.test_size, self.seed, 1.0, self.device)?)?;
        Ok(Some(Evaluation {
            metrics: vec![
                ("test_modes_covered".into(), modes.modes_covered as f64),
                (
                    "test_high_quality_fraction".into(),
                    modes.high_quality_fraction,
                ),
            ],
            score: (8 - modes.modes_covered) as f64 + 1.0 - modes.high_quality_fraction,
        }))
    }
}

impl ToyGanTask {
    /// Points `[n, 2]` in the model's floating-point type on its device, or an error naming the
    /// expected shape.
    fn points(&self, x: &Tensor) -> Result<Tensor> {
        let kind = self.gan.generator.kind();
        super::checked_points(x, DIM, kind, self.device, "a toy GAN")
    }
}

impl Task for ToyGanTask {
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
        let data = ToyBatches {
            density: self.config.data.density,
            seed: run.seed,
            batch_size: run.train.batch_size as usize,
            test_size: self.config.data.test_size as i64,
            device: self.device,
            kind: run.dtype.kind(),
        };
        Ok(Training {
            objective: Box::new(GanObjective {
                losses: GanLosses::new(&self.gan, &self.config.train),
                rule: self.config.train.update,
                data,
                seed: run.seed,
            }),
            plan: run.train.plan(None)?,
        })
    }

    fn write_pictures(&self, run: &RunConfig, out_dir: &Path) -> Result<()> {
        let samples = self.gan.sample(PICTURE_SAMPLES, run.seed, 1.0, self.device)?;
        let range = self.config.data.density.plot_range();
        plots::save_scatter_histogram(&samples, range, &out_dir.join("samples.png"))?;
        super::write_curves(out_dir)
    }

    fn evaluate(&self, run: &RunConfig) -> Result<serde_json::Value> {
        let density = self.config.data.density;
        let n = self.config.data.test_size;
        let samples = self.gan.sample(n as i64, run.seed, 1.0, self.device)?;
        let modes = match density {
            ToyDensity::EightGaussians => Some(eight_gaussians_modes(&samples)?),
            _ => None,
        };
        let (rho_mean, recon_mse) = if self.gan.is_encoder() {
            tch::manual_seed(derived_seed(run.seed, Stream::Test, 0) as i64);
            let z = self.gan.latents(n as i64, self.gan.generator.kind(), self.device);
            let rho = self.gan.latent_correlation(&z)?.mean(Kind::Double);
            let x = self.points(&density.sample(n, derived_seed(run.seed, Stream::Test, 1)))?;
            let x_hat = self.gan.generate(&self.gan.encode(&x)?)?;
            let mse = reconstruction_mse(&x, &x_hat)?.mean;
            (Some(rho.double_value(&[])), Some(mse))
        } else {
            (None, None)
        };
        let report = ToyGanReport {
            density: density.to_string(),
            update: self.config.train.update.name().to_string(),
            samples: n,
            modes,
            rho_mean,
            recon_mse,
        };
        serde_json::to_value(report).map_err(|e| Error::config(e.to_string()))
    }

    fn sample(&self, run: &RunConfig, options: &SampleOptions) -> Result<Tensor> {
        let seed = options.seed.unwrap_or(run.seed);
        let temperature = options.temperature.unwrap_or(1.0);
        Ok(self
            .gan
            .sample(options.n, seed, temperature, self.device)?
            .to_device(Device::Cpu))
    }

    fn default_sample_count(&self) -> i64 {
        10_000
    }

    fn encoder(&self) -> Option<&dyn Encoder> {
        self.gan.is_encoder().then_some(self as &dyn Encoder)
    }

    fn averaged(&self, name: &str) -> bool {
        is_generator(name)
    }
}

impl Encoder for ToyGanTask {
    fn encode(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.gan.encode(&self.points(x)?)?.to_device(Device::Cpu))
    }

    fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let z = self.gan.checked_latents(z, self.device)?;
        Ok(self.gan.generate(&z)?.to_device(Device::Cpu))
    }

    fn latent_shape(&self) -> Vec<i64> {
        vec![self.gan.generator.z_dim()]
    }
}
