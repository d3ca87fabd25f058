//! `task = "image-density"`: i-ResNet density estimation on images (SPEC section 1): training with
//! test bits/dim every epoch, samples and reconstructions, and per-image bits/dim, encoding and
//! decoding of one's own images.
//!
//! Images are exchanged as intensities `v` in `[0, 1]` ([`DataKind`]); the model sees the level
//! `l = round(v (L - 1))` dequantised at the midpoint, `x = (l + 1/2) / L`, and gives back
//! `v = (x L - 1/2) / (L - 1)`.

use super::image_epochs::{image_training, BatchLoss};
use super::report::InvertibilityReport;
use super::toy_density::item_convergence;
use super::{
    DataKind, Density, Invertible, ItemConvergence, LogProb, SampleOptions, Task, TaskSpec,
    Training,
};
use crate::config::RunConfig;
use crate::data::{ImageDataConfig, ImageDataset};
use crate::flows::{FlowContext, FlowEvalConfig, FlowTrainConfig, Transform};
use crate::models::{ImageFlow, ImageFlowConfig};
use crate::nn::ResidualNet;
use crate::plots;
use crate::seeds::{derived_seed, Stream};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Images per evaluation batch.
const EVAL_BATCH: i64 = 256;
/// Test images shown in `reconstructions.png`.
const RECONSTRUCTED: i64 = 32;
/// Samples shown in `samples.png`.
const PICTURE_SAMPLES: i64 = 64;

/// The configuration of an image-density run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDensityConfig {
    pub data: ImageDataConfig,
    pub model: ImageFlowConfig,
    #[serde(default)]
    pub eval: FlowEvalConfig,
    /// The flows' part of `[train]`: the log-det estimator of the training loss.
    #[serde(default)]
    pub train: FlowTrainConfig,
}

impl TaskSpec for ImageDensityConfig {
    const OUTPUTS: &'static [&'static str] = &["samples.png", "reconstructions.png"];

    fn validate(&self, _run: &RunConfig) -> Result<()> {
        self.data.validate()?;
        self.model
            .validate()
            .map_err(|e| e.context("model"))?;
        self.eval.validate()?;
        self.train.logdet.validate()
    }

    fn build(&self, run: &RunConfig, device: Device) -> Result<Box<dyn Task>> {
        let vs = VarStore::new(device);
        let model = ImageFlow::new(&vs.root(), &self.model)?;
        Ok(Box::new(ImageDensityTask {
            config: self.clone(),
            vs,
            model,
            device,
            seed: run.seed,
        }))
    }

    /// Format 1 kept the model under `[image_model]`.
    fn migrate_v1(table: &mut toml::Table) {
        if let Some(model) = table.remove("image_model") {
            table.insert("model".into(), model);
        }
    }
}

/// An image density model with its configuration.
struct ImageDensityTask {
    config: ImageDensityConfig,
    vs: VarStore,
    model: ImageFlow,
    device: Device,
    seed: u64,
}

/// The report of `genflow eval` on an image-density run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageDensityReport {
    pub dataset: String,
    pub test_images: usize,
    /// Mean bits/dim of the test images, uniformly dequantised (the standard).
    pub test_bits_per_dim: f64,
    /// The same, dequantised at the midpoints (deterministic).
    pub test_bits_per_dim_midpoint: f64,
    /// The log-det estimator of these numbers.
    pub logdet_estimator: serde_json::Value,
    #[serde(flatten)]
    pub invertibility: InvertibilityReport,
}

/// How test images are dequantised for bits/dim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dequantization {
    /// `(x + u) / L`, `u ~ U[0, 1)` (the standard, SPEC section 1), with a fixed seed.
    Uniform,
    /// `(x + 1/2) / L`: deterministic, for comparing implementations exactly.
    Midpoint,
}

impl BatchLoss for ImageDensityTask {
    fn batch_loss(
        &self,
        images: &Tensor,
        _labels: &Tensor,
        _levels: u32,
        step: u64,
    ) -> Result<(Tensor, Vec<(String, f64)>)> {
        let seed = derived_seed(self.seed, Stream::Probe, step);
        tch::manual_seed(seed as i64);
        let mut ctx = FlowContext::train(self.config.train.logdet, seed);
        let bpd = self
            .model
            .bits_per_dim(&images.to_device(self.device), &mut ctx)?
            .mean(Kind::Float);
        Ok((bpd, Vec::new()))
    }

    fn test_metric(&self, test: &ImageDataset) -> Result<(&'static str, f64, f64)> {
        let bpd = self.test_bits_per_dim(test, Dequantization::Uniform)?;
        Ok(("test_bits_per_dim", bpd, bpd))
    }
}

impl ImageDensityTask {
    fn levels(&self) -> f64 {
        f64::from(self.config.model.levels)
    }

    /// Bits/dim per image of integer levels `images` with the evaluation estimator, in batches
    /// (a progress bar on long evaluations).
    fn bits_per_dim(&self, images: &Tensor, dequantization: Dequantization) -> Result<Tensor> {
        tch::manual_seed(derived_seed(self.seed, Stream::Test, 0) as i64);
        let mut ctx = self.config.eval.context(self.seed);
        let chunks = images.split(EVAL_BATCH, 0);
        let bar = crate::progress::bar(chunks.len() as u64, 0, "bits/dim");
        let per_image = chunks
            .iter()
            .map(|chunk| {
                let chunk = chunk.to_device(self.device);
                let bpd = tch::no_grad(|| match dequantization {
                    Dequantization::Uniform => self.model.bits_per_dim(&chunk, &mut ctx),
                    Dequantization::Midpoint => {
                        let x = (chunk.to_kind(Kind::Float) + 0.5) / self.levels();
                        self.model.bits_per_dim_dequantized(&x, &mut ctx)
                    }
                });
                bar.inc(1);
                bpd.map(|b| b.to_kind(Kind::Double).to_device(Device::Cpu))
            })
            .collect::<Result<Vec<_>>>()?;
        bar.finish_and_clear();
        Ok(Tensor::cat(&per_image, 0))
    }

    /// Mean bits/dim over a test set.
    fn test_bits_per_dim(&self, test: &ImageDataset, dequantization: Dequantization) -> Result<f64> {
        Ok(self
            .bits_per_dim(&test.images, dequantization)?
            .sum(Kind::Double)
            .double_value(&[])
            / test.len() as f64)
    }

    /// Intensities in `[0, 1]` to the model's input: the nearest level, at its midpoint.
    fn model_input(&self, v: &Tensor) -> Result<Tensor> {
        let shape = self.config.model.in_shape;
        let size = v.size();
        if size.len() != 4 || size[1..] != shape {
            return Err(Error::shape(format!(
                "this image density model takes images [n, {}, {}, {}], got shape {size:?}",
                shape[0], shape[1], shape[2]
            )));
        }
        let top = self.levels() - 1.0;
        let levels = (v.to_kind(Kind::Float).clamp(0.0, 1.0) * top).round();
        Ok(((levels + 0.5) / self.levels()).to_device(self.device))
    }

    /// The model's scaled images back to intensities.
    fn to_intensities(&self, x: &Tensor) -> Tensor {
        ((x * self.levels() - 0.5) / (self.levels() - 1.0)).to_device(Device::Cpu)
    }
}

impl Task for ImageDensityTask {
    fn vars(&self) -> &VarStore {
        &self.vs
    }

    fn data_kind(&self) -> DataKind {
        DataKind::Images {
            shape: self.config.model.in_shape,
            levels: self.config.model.levels,
        }
    }

    fn training(&self, run: &RunConfig) -> Result<Training<'_>> {
        image_training(self, &self.config.data, self.config.model.in_shape, run)
    }

    fn write_pictures(&self, run: &RunConfig, out_dir: &Path) -> Result<()> {
        let options = SampleOptions {
            n: PICTURE_SAMPLES,
            ..Default::default()
        };
        let samples = self.sample(run, &options)?;
        plots::save_image_grid(&samples, 8, &out_dir.join("samples.png"))?;
        let test = self.config.data.load_test()?;
        let n = RECONSTRUCTED.min(test.len() as i64);
        let v = test.images.narrow(0, 0, n).to_kind(Kind::Float) / (self.levels() - 1.0);
        let x = self.model_input(&v)?;
        let mut ctx = self.config.eval.context(self.seed);
        let (x_hat, _) = self.model.reconstruct(&x, &mut ctx)?;
        let both = Tensor::cat(&[self.to_intensities(&x), self.to_intensities(&x_hat)], 0);
        plots::save_image_grid(&both, 8, &out_dir.join("reconstructions.png"))?;
        super::write_curves(out_dir)
    }

    fn evaluate(&self, _run: &RunConfig) -> Result<serde_json::Value> {
        let test = self.config.data.load_test()?;
        let bpd = self.test_bits_per_dim(&test, Dequantization::Uniform)?;
        let midpoint = self.test_bits_per_dim(&test, Dequantization::Midpoint)?;
        let n = EVAL_BATCH.min(test.len() as i64);
        let x = (test.images.narrow(0, 0, n).to_kind(Kind::Float) + 0.5) / self.levels();
        let mut ctx = self.config.eval.context(self.seed);
        let (_, err) = self.model.reconstruct(&x.to_device(self.device), &mut ctx)?;
        let report = ImageDensityReport {
            dataset: self.config.data.dataset.to_string(),
            test_images: test.len(),
            test_bits_per_dim: bpd,
            test_bits_per_dim_midpoint: midpoint,
            logdet_estimator: serde_json::to_value(self.config.eval.logdet)
                .map_err(|e| Error::config(e.to_string()))?,
            invertibility: InvertibilityReport::new(err, n, &ctx, &self.residual_nets())?,
        };
        serde_json::to_value(report).map_err(|e| Error::config(e.to_string()))
    }

    fn residual_nets(&self) -> Vec<&ResidualNet> {
        self.model.residual_nets()
    }

    fn sample(&self, run: &RunConfig, options: &SampleOptions) -> Result<Tensor> {
        let seed = options.seed.unwrap_or(run.seed);
        tch::manual_seed(derived_seed(seed, Stream::Sample, 0) as i64);
        let mut ctx = self.config.eval.context(seed);
        let temperature = options.temperature.unwrap_or(self.config.eval.temperature);
        let x = self.model.sample(options.n, temperature, &mut ctx)?;
        Ok(self.to_intensities(&x.clamp(0.0, 1.0)).clamp(0.0, 1.0))
    }

    fn density(&self) -> Option<&dyn Density> {
        Some(self)
    }

    fn invertible(&self) -> Option<&dyn Invertible> {
        Some(self)
    }

    fn reference_data(&self) -> Option<&ImageDataConfig> {
        Some(&self.config.data)
    }
}

impl Density for ImageDensityTask {
    /// Bits/dim of each image at the midpoint dequantisation, and `log P = -bpd D ln 2` nats.
    fn log_prob(&self, v: &Tensor) -> Result<LogProb> {
        let x = self.model_input(v)?;
        let levels = (x * self.levels() - 0.5).round();
        let bpd = self.bits_per_dim(&levels, Dequantization::Midpoint)?;
        let dims = self.config.model.dims() as f64;
        let bits_per_dim = Vec::<f64>::try_from(&bpd)?;
        let log_prob = bits_per_dim
            .iter()
            .map(|b| -b * dims * std::f64::consts::LN_2)
            .collect();
        Ok(LogProb {
            log_prob,
            bits_per_dim: Some(bits_per_dim),
        })
    }
}

impl Invertible for ImageDensityTask {
    fn encode(&self, v: &Tensor) -> Result<Tensor> {
        let x = self.model_input(v)?;
        let mut ctx = FlowContext::without_logdet(false);
        let _guard = tch::no_grad_guard();
        Ok(self.model.flow.transform.forward(&x, &mut ctx)?.0.to_device(Device::Cpu))
    }

    fn decode(&self, z: &Tensor) -> Result<(Tensor, Vec<ItemConvergence>)> {
        let d = self.config.model.dims();
        let size = z.size();
        if size.len() != 2 || size[1] != d {
            return Err(Error::shape(format!(
                "this image density model decodes latents [n, {d}], got shape {size:?}"
            )));
        }
        let mut ctx = self.config.eval.context(self.seed);
        let _guard = tch::no_grad_guard();
        let z = z.to_kind(Kind::Float).to_device(self.device);
        let x = self.model.flow.transform.inverse(&z, &mut ctx)?;
        Ok((self.to_intensities(&x), item_convergence(&ctx, size[0])?))
    }

    fn latent_shape(&self) -> Vec<i64> {
        vec![self.config.model.dims()]
    }
}
