//! `task = "image-gan"`: a DCGAN-style GAN or O-GAN on images (SPEC section 3), trained in epochs
//! over an image data set (MNIST, Fashion-MNIST, CIFAR-10, or a folder of one's own images) with
//! the alternating or the single-loss update ([`crate::gan::update`]).
//!
//! Images are exchanged as intensities `v` in `[0, 1]` ([`DataKind`]); the nets see
//! `x = 2 v - 1` and the generator's `tanh` output maps back by `v = (x + 1) / 2`.
//!
//! An O-GAN (`model.encoder = true`) is also an [`Encoder`]: `genflow encode` gives
//! `z = N(E(x))` (the codes centred and scaled to unit standard deviation per image) and
//! `genflow decode` gives `G(z)`; a run writes reconstructions `G(s N(E(x)))` (`s =
//! eval.reconstruction_scale`, the reference's 0.9) and interpolations `G((1 - t) z_a + t z_b)`
//! between encoded test images, and `genflow eval` reports `rho(z, E(G(z)))` on fresh latents,
//! the reconstruction error of the test images and how often the data set's feature classifier
//! ([`super::quality::FeatureNetwork`]) gives a reconstruction its input's label.
//!
//! `genflow eval` adds FD, KID and precision/recall of generated images against the test split
//! ([`super::quality`]) for the data sets with labels (not for a folder of one's own images).

use super::image_epochs::training_sets;
use super::quality::FeatureNetwork;
use super::{DataKind, Encoder, SampleOptions, Task, TaskSpec, Training};
use crate::config::RunConfig;
use crate::data::{DatasetName, ImageDataConfig, ImageDataset};
use crate::gan::{
    is_generator, ConvGanConfig, Gan, GanLosses, GanObjective, GanTrainConfig, RealData,
};
use crate::metrics::{label_agreement, reconstruction_mse};
use crate::plots;
use crate::seeds::{derived_seed, Stream};
use crate::train::Evaluation;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Samples shown in `samples.png` (8 x 8).
const PICTURE_SAMPLES: i64 = 64;
/// Test images shown with their reconstructions in `reconstructions.png` (4 pairs of rows of 8).
const RECONSTRUCTED: i64 = 32;
/// Rows (pairs of test images) of `interpolations.png`.
const INTERPOLATED_PAIRS: i64 = 8;
/// Generated images between the two ends of an interpolation row.
const INTERPOLATION_STEPS: i64 = 8;
/// Fresh latents of the `test_rho_mean` logged during training.
const TRAINING_RHO_SAMPLES: i64 = 1000;

/// How an image-GAN run is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageGanEvalConfig {
    /// Generated images (and fresh latents for `rho_mean`) of `genflow eval`.
    #[serde(default = "default_samples")]
    pub samples: usize,
    /// O-GAN reconstructions decode `s N(E(x))` with this `s` (the reference's 0.9; default 1).
    #[serde(default = "one")]
    pub reconstruction_scale: f64,
}

fn default_samples() -> usize {
    10_000
}

fn one() -> f64 {
    1.0
}

impl Default for ImageGanEvalConfig {
    fn default() -> Self {
        ImageGanEvalConfig {
            samples: default_samples(),
            reconstruction_scale: one(),
        }
    }
}

/// The configuration of an image-GAN run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageGanConfig {
    pub data: ImageDataConfig,
    pub model: ConvGanConfig,
    /// The GAN's part of `[train]`: update rule, loss, penalty, O-GAN weight.
    #[serde(default)]
    pub train: GanTrainConfig,
    #[serde(default)]
    pub eval: ImageGanEvalConfig,
}

impl TaskSpec for ImageGanConfig {
    const OUTPUTS: &'static [&'static str] =
        &["samples.png", "reconstructions.png", "interpolations.png"];

    fn validate(&self, _run: &RunConfig) -> Result<()> {
        self.data.validate()?;
        self.model.validate()?;
        self.train.validate(self.model.encoder)?;
        if let Some(size) = self.data.configured_shape() {
            if size != self.model.image_shape {
                return Err(Error::config(format!(
                    "data.image_size = {size:?} but model.image_shape = {:?}; set both to the \
                     same [C, H, W]",
                    self.model.image_shape
                )));
            }
        }
        if self.eval.samples < 2 {
            return Err(Error::config(format!(
                "eval.samples must be at least 2, got {}",
                self.eval.samples
            )));
        }
        let s = self.eval.reconstruction_scale;
        if !(s > 0.0 && s.is_finite()) {
            return Err(Error::config(format!(
                "eval.reconstruction_scale must be a positive number, got {s}"
            )));
        }
        Ok(())
    }

    fn build(&self, _run: &RunConfig, device: Device) -> Result<Box<dyn Task>> {
        let vs = VarStore::new(device);
        let gan = Gan::conv(&vs.root(), &self.model)?;
        Ok(Box::new(ImageGanTask {
            config: self.clone(),
            vs,
            gan,
            device,
        }))
    }
}

/// An image GAN with its configuration.
struct ImageGanTask {
    config: ImageGanConfig,
    vs: VarStore,
    gan: Gan,
    device: Device,
}

/// The report of `genflow eval` on an image-GAN run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageGanReport {
    pub dataset: String,
    /// `"alternating"` or `"single-loss"`.
    pub update: String,
    /// Generated images (and fresh latents) evaluated.
    pub samples: usize,
    /// Test images evaluated.
    pub test_images: usize,
    /// O-GAN: mean `rho(z, E(G(z)))` over `samples` fresh latents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rho_mean: Option<f64>,
    /// O-GAN: mean squared error of the reconstructions `G(s N(E(x)))` of the test images, as
    /// intensities in `[0, 1]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recon_mse: Option<f64>,
    /// O-GAN: the share of test images whose reconstruction the feature classifier gives the
    /// image's own label (data sets with labels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recon_label_agreement: Option<f64>,
    /// The same classifier's accuracy on the test images themselves, for scale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_label_accuracy: Option<f64>,
}

/// Images `u8 [n, C, H, W]` with `levels` grey levels as the nets take them, `2 v - 1`.
fn to_model(images: &Tensor, levels: u32, device: Device) -> Tensor {
    (images.to_device(device).to_kind(Kind::Float) / (f64::from(levels) - 1.0)) * 2.0 - 1.0
}

/// The nets' images back to intensities in `[0, 1]` (on the CPU).
fn to_intensities(x: &Tensor) -> Tensor {
    ((x + 1.0) / 2.0).clamp(0.0, 1.0).to_device(Device::Cpu)
}

/// The training set in epochs, and the periodic O-GAN evaluation on the test images.
struct ImageBatches {
    train: ImageDataset,
    test: ImageDataset,
    seed: u64,
    batch_size: usize,
    device: Device,
    reconstruction_scale: f64,
}

impl RealData for ImageBatches {
    fn batch(&mut self, step: u64) -> Result<Tensor> {
        let (images, _) = self.train.epoch_batch(self.seed, step, self.batch_size)?;
        Ok(to_model(&images, self.train.levels, self.device))
    }

    /// O-GAN: `test_rho_mean` on fresh latents and `test_recon_mse` on the test images (the
    /// score to minimise).
    fn evaluate(&mut self, gan: &Gan, _step: u64) -> Result<Option<Evaluation>> {
        if !gan.is_encoder() {
            return Ok(None);
        }
        let rho = rho_mean(gan, TRAINING_RHO_SAMPLES, self.seed, self.device)?;
        let x = to_model(&self.test.images, self.test.levels, self.device);
        let mse = reconstruction_error(gan, &x, self.reconstruction_scale)?;
        Ok(Some(Evaluation {
            metrics: vec![
                ("test_rho_mean".into(), rho),
                ("test_recon_mse".into(), mse),
            ],
            score: mse,
        }))
    }
}

/// Mean `rho(z, E(G(z)))` over `n` latents drawn from `seed` ([`Stream::Test`]).
fn rho_mean(gan: &Gan, n: i64, seed: u64, device: Device) -> Result<f64> {
    tch::manual_seed(derived_seed(seed, Stream::Test, 0) as i64);
    let z = gan.latents(n, Kind::Float, device);
    Ok(gan.latent_correlation(&z)?.mean(Kind::Double).double_value(&[]))
}

/// `G(s N(E(x)))` of model-space images `x`.
fn reconstruct(gan: &Gan, x: &Tensor, scale: f64) -> Result<Tensor> {
    Ok(gan.generate(&(gan.encode(x)? * scale)))
}

/// Mean squared error of the reconstructions of model-space images `x`, as intensities.
fn reconstruction_error(gan: &Gan, x: &Tensor, scale: f64) -> Result<f64> {
    let x_hat = reconstruct(gan, x, scale)?;
    Ok(reconstruction_mse(&to_intensities(x), &to_intensities(&x_hat))?.mean)
}

/// What `genflow eval` reports about an O-GAN's encoder.
struct EncoderNumbers {
    rho_mean: f64,
    recon_mse: f64,
    /// `(reconstructions, inputs)`: agreement of the feature classifier with the true labels.
    labels: Option<(f64, f64)>,
}

impl ImageGanTask {
    fn levels(&self) -> u32 {
        self.config.data.dataset.levels()
    }

    /// Intensities `[n, C, H, W]` in `[0, 1]` as the nets take them, or an error naming the
    /// expected shape.
    fn model_input(&self, v: &Tensor) -> Result<Tensor> {
        let shape = self.config.model.image_shape;
        let size = v.size();
        if size.len() != 4 || size[1..] != shape {
            return Err(Error::shape(format!(
                "this image GAN takes images [n, {}, {}, {}], got shape {size:?}",
                shape[0], shape[1], shape[2]
            )));
        }
        Ok(v.to_kind(Kind::Float).to_device(self.device).clamp(0.0, 1.0) * 2.0 - 1.0)
    }

    /// `rho(z, E(G(z)))` on `n` fresh latents, and the reconstructions of the `test` images: their
    /// error and, for data sets with labels, how often the data set's feature classifier
    /// ([`FeatureNetwork::for_data`], trained once when missing) gives them their input's label.
    fn encoder_numbers(&self, test: &ImageDataset, n: i64, seed: u64) -> Result<EncoderNumbers> {
        let x = to_model(&test.images, test.levels, self.device);
        let x_hat = reconstruct(&self.gan, &x, self.config.eval.reconstruction_scale)?;
        let (v, v_hat) = (to_intensities(&x), to_intensities(&x_hat));
        let labels = match self.reference_data() {
            Some(data) => {
                let net = FeatureNetwork::for_data(data, self.device)?;
                let truth = test.labels.to_device(Device::Cpu);
                let agree = |images: &Tensor| -> Result<f64> {
                    label_agreement(&truth, &net.classify(images)?.to_device(Device::Cpu))
                };
                Some((agree(&v_hat)?, agree(&v)?))
            }
            None => None,
        };
        Ok(EncoderNumbers {
            rho_mean: rho_mean(&self.gan, n, seed, self.device)?,
            recon_mse: reconstruction_mse(&v, &v_hat)?.mean,
            labels,
        })
    }

    /// `reconstructions.png` and `interpolations.png` of the first test images.
    fn write_encoder_pictures(&self, out_dir: &Path) -> Result<()> {
        let test = self.config.data.load_test()?;
        let n = RECONSTRUCTED.min(test.len() as i64);
        let x = to_model(&test.images.narrow(0, 0, n), test.levels, self.device);
        let scale = self.config.eval.reconstruction_scale;
        let x_hat = reconstruct(&self.gan, &x, scale)?;
        let rows: Vec<Tensor> = (0..(n + 7) / 8)
            .flat_map(|r| {
                let len = 8.min(n - 8 * r);
                [x.narrow(0, 8 * r, len), x_hat.narrow(0, 8 * r, len)]
            })
            .collect();
        let grid = to_intensities(&Tensor::cat(&rows, 0));
        plots::save_image_grid(&grid, 8, &out_dir.join("reconstructions.png"))?;

        let pairs = INTERPOLATED_PAIRS.min(n / 2);
        if pairs == 0 {
            return Ok(());
        }
        let (a, b) = (x.narrow(0, 0, pairs), x.narrow(0, pairs, pairs));
        let (za, zb) = (self.gan.encode(&a)? * scale, self.gan.encode(&b)? * scale);
        let mut columns = vec![a.shallow_clone()];
        for k in 0..INTERPOLATION_STEPS {
            let t = k as f64 / (INTERPOLATION_STEPS - 1) as f64;
            columns.push(self.gan.generate(&(&za * (1.0 - t) + &zb * t)));
        }
        columns.push(b);
        // row-major: pair i's row holds its columns in order
        let grid = Tensor::stack(&columns, 1).flatten(0, 1);
        let width = columns.len();
        plots::save_image_grid(
            &to_intensities(&grid),
            width,
            &out_dir.join("interpolations.png"),
        )
    }
}

impl Task for ImageGanTask {
    fn vars(&self) -> &VarStore {
        &self.vs
    }

    fn data_kind(&self) -> DataKind {
        DataKind::Images {
            shape: self.config.model.image_shape,
            levels: self.levels(),
        }
    }

    fn training(&self, run: &RunConfig) -> Result<Training<'_>> {
        let (train, test) = training_sets(
            &self.config.data,
            self.config.model.image_shape,
            "model.image_shape",
        )?;
        let plan = run.train.plan(Some(train.len()))?;
        let data = ImageBatches {
            train,
            test,
            seed: run.seed,
            batch_size: run.train.batch_size as usize,
            device: self.device,
            reconstruction_scale: self.config.eval.reconstruction_scale,
        };
        Ok(Training {
            objective: Box::new(GanObjective {
                losses: GanLosses::new(&self.gan, &self.config.train),
                rule: self.config.train.update,
                data,
                seed: run.seed,
            }),
            plan,
        })
    }

    fn write_pictures(&self, run: &RunConfig, out_dir: &Path) -> Result<()> {
        let samples = self.gan.sample(PICTURE_SAMPLES, run.seed, 1.0, self.device);
        plots::save_image_grid(&to_intensities(&samples), 8, &out_dir.join("samples.png"))?;
        if self.gan.is_encoder() {
            self.write_encoder_pictures(out_dir)?;
        }
        super::write_curves(out_dir)
    }

    fn evaluate(&self, run: &RunConfig) -> Result<serde_json::Value> {
        let test = self.config.data.load_test()?;
        let n = self.config.eval.samples;
        let encoder = if self.gan.is_encoder() {
            Some(self.encoder_numbers(&test, n as i64, run.seed)?)
        } else {
            None
        };
        let report = ImageGanReport {
            dataset: self.config.data.dataset.to_string(),
            update: self.config.train.update.name().to_string(),
            samples: n,
            test_images: test.len(),
            rho_mean: encoder.as_ref().map(|e| e.rho_mean),
            recon_mse: encoder.as_ref().map(|e| e.recon_mse),
            recon_label_agreement: encoder.as_ref().and_then(|e| e.labels.map(|l| l.0)),
            input_label_accuracy: encoder.as_ref().and_then(|e| e.labels.map(|l| l.1)),
        };
        serde_json::to_value(report).map_err(|e| Error::config(e.to_string()))
    }

    fn reference_data(&self) -> Option<&ImageDataConfig> {
        (self.config.data.dataset != DatasetName::Folder).then_some(&self.config.data)
    }

    fn sample(&self, run: &RunConfig, options: &SampleOptions) -> Result<Tensor> {
        let seed = options.seed.unwrap_or(run.seed);
        let temperature = options.temperature.unwrap_or(1.0);
        let x = self.gan.sample(options.n, seed, temperature, self.device);
        Ok(to_intensities(&x))
    }

    fn encoder(&self) -> Option<&dyn Encoder> {
        self.gan.is_encoder().then_some(self as &dyn Encoder)
    }

    fn averaged(&self, name: &str) -> bool {
        is_generator(name)
    }
}

impl Encoder for ImageGanTask {
    fn encode(&self, v: &Tensor) -> Result<Tensor> {
        Ok(self.gan.encode(&self.model_input(v)?)?.to_device(Device::Cpu))
    }

    fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let z = self.gan.checked_latents(z, self.device)?;
        Ok(to_intensities(&self.gan.generate(&z)))
    }

    fn latent_shape(&self) -> Vec<i64> {
        vec![self.gan.generator.z_dim()]
    }
}
