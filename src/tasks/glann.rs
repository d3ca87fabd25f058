//! `task = "glann"`: GLANN, non-adversarial image generation (SPEC section 4; [`crate::glann`]) as
//! one run in two phases over one plan of optimiser steps:
//!
//! 1. **GLO**, `train.epochs` (or `train.steps`) over the training images with `train.batch_size`:
//!    the generator and the codes of the batch's images minimise the reconstruction loss
//!    (`[loss]`); the codes are projected onto the unit sphere after every step. The mapper is
//!    untouched (it has no gradient).
//! 2. **IMLE**, `train.imle_rounds` rounds, each a search ([`crate::glann::imle::search_round`],
//!    `train.imle_candidates` noise vectors per code) and `train.imle_epochs` epochs over the codes
//!    with `train.imle_batch_size`, regressing the mapper onto the codes. The generator and the
//!    codes are frozen in the optimiser ([`crate::optim::Optimizer::set_frozen`]).
//!
//! Being one run, checkpoints, `--resume`, the time budget and Ctrl-C work across the phase
//! boundary: the checkpoint holds the generator, the code table, the mapper, the round's search
//! result (the buffer `imle.noise`, so a run resumed within a round regresses onto the same
//! targets) and the optimiser state; every random draw derives from the run's seed and the step.
//!
//! One optimiser serves both phases, with the parameter groups of `[optim]` giving each part its
//! learning rate. The official code's settings (`yedidh/glann`): Adam with betas (0.5, 0.999),
//! generator 1e-3, codes 1e-2, mapper 1e-3 with weight decay 1e-5:
//!
//! ```toml
//! [optim]
//! kind = "adam"
//! lr = 1e-3
//! betas = [0.5, 0.999]
//! [[optim.groups]]
//! pattern = "codes"
//! lr_mult = 10.0
//! [[optim.groups]]
//! pattern = "mapper.*"
//! weight_decay = 1e-5
//! ```
//!
//! The code table gets a dense gradient (zero outside the batch's rows) and a dense Adam update,
//! as the official `nn.Embedding` (not sparse) under `optim.Adam` does, so rows outside the batch
//! keep moving with their decaying first moments for a few steps.
//!
//! Outputs: `samples.png` (GLANN samples on the left, GLO-Gaussian samples on the right),
//! `reconstructions.png` (training images, then their reconstructions), `interpolations.png`
//! (spherical interpolation between codes of training images), `curves.png`; `genflow eval`
//! reports the train reconstruction error ([`GlannReport`]) and the sample quality against the
//! test split of both samplers (`fd`, `kid_mean`, ... for GLANN, `fd_glo_gaussian`,
//! `kid_glo_gaussian`, ... for the GLO baseline); `genflow encode` fits codes to new images.

use super::{CodeFit, DataKind, FittedCodes, SampleOptions, Task, TaskSpec, Training};
use crate::config::RunConfig;
use crate::data::{epoch_index, ImageDataConfig, ImageDataset};
use crate::glann::codes::{pca_codes, project_to_sphere, sphere_deviation, CodeGaussian};
use crate::glann::search::{nearest, Blocks, DEFAULT_BLOCK_ENTRIES};
use crate::glann::{imle, CodeInit, GlannModel, GlannModelConfig, ReconstructionLoss, CODES};
use crate::optim::{OptimConfig, OptimKind, Optimizer};
use crate::seeds::{derived_seed, Stream};
use crate::train::{descend, Evaluation, Objective, Plan, Update};
use crate::{plots, Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Images per batch of generator evaluations (reconstructions, samples, encoding).
const EVAL_BATCH: i64 = 500;
/// Samples of each sampler in `samples.png` (an 8 x 8 grid each).
const PICTURE_SAMPLES: i64 = 64;
/// Training images in `reconstructions.png`.
const RECONSTRUCTED: i64 = 32;
/// Pairs of codes and steps per pair in `interpolations.png`.
const INTERPOLATIONS: (i64, i64) = (8, 10);
/// Training images whose reconstruction error the evaluations during training report.
const EVAL_IMAGES: i64 = 1000;
/// The name of the GLO baseline sampler (`genflow eval` reports `fd_glo_gaussian`, ...).
const GLO_GAUSSIAN: &str = "glo_gaussian";

/// The configuration of a GLANN run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlannConfig {
    pub data: ImageDataConfig,
    pub model: GlannModelConfig,
    #[serde(default)]
    pub loss: ReconstructionLoss,
    /// The IMLE phase's part of `[train]` (the GLO phase uses the shared keys).
    #[serde(default)]
    pub train: ImleTrainConfig,
    #[serde(default)]
    pub eval: GlannEvalConfig,
}

/// The IMLE phase (`[train]` keys of the glann task).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImleTrainConfig {
    /// Rounds of search and regression (official: 50).
    #[serde(default = "default_rounds")]
    pub imle_rounds: u64,
    /// Epochs of regression over the codes per round (official: 1).
    #[serde(default = "one")]
    pub imle_epochs: u64,
    /// Codes per regression step (official: 128).
    #[serde(default = "default_batch")]
    pub imle_batch_size: i64,
    /// Noise vectors drawn per code in each round's search (official: about 2; SPEC: 10).
    #[serde(default = "default_candidates")]
    pub imle_candidates: i64,
    /// Entries of one block of the search's distance matrix (`f32`: 4 bytes each).
    #[serde(default = "default_block")]
    pub imle_block_entries: i64,
}

fn default_rounds() -> u64 {
    50
}
fn one() -> u64 {
    1
}
fn default_batch() -> i64 {
    128
}
fn default_candidates() -> i64 {
    10
}
fn default_block() -> i64 {
    DEFAULT_BLOCK_ENTRIES
}

impl Default for ImleTrainConfig {
    fn default() -> Self {
        ImleTrainConfig {
            imle_rounds: default_rounds(),
            imle_epochs: one(),
            imle_batch_size: default_batch(),
            imle_candidates: default_candidates(),
            imle_block_entries: default_block(),
        }
    }
}

/// Evaluation and encoding settings (`[eval]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlannEvalConfig {
    /// Samples of each sampler whose codes' distance to the nearest training code `genflow eval`
    /// reports (FD and KID take `genflow eval --samples`).
    #[serde(default = "default_samples")]
    pub samples: i64,
    /// Adam steps of `genflow encode` per batch of images.
    #[serde(default = "default_encode_steps")]
    pub encode_steps: u64,
    /// Learning rate of those steps (the codes' rate in training, by default).
    #[serde(default = "default_encode_lr")]
    pub encode_lr: f64,
    /// Training codes among which `genflow encode` picks each image's starting code (the one
    /// whose image is nearest in pixels).
    #[serde(default = "default_encode_starts")]
    pub encode_starts: i64,
}

fn default_samples() -> i64 {
    10000
}
fn default_encode_steps() -> u64 {
    300
}
fn default_encode_lr() -> f64 {
    0.01
}
fn default_encode_starts() -> i64 {
    1024
}

impl Default for GlannEvalConfig {
    fn default() -> Self {
        GlannEvalConfig {
            samples: default_samples(),
            encode_steps: default_encode_steps(),
            encode_lr: default_encode_lr(),
            encode_starts: default_encode_starts(),
        }
    }
}

impl TaskSpec for GlannConfig {
    const OUTPUTS: &'static [&'static str] = &[
        "samples.png",
        "reconstructions.png",
        "interpolations.png",
    ];

    fn validate(&self, run: &RunConfig) -> Result<()> {
        self.data.validate()?;
        self.model.validate()?;
        self.loss.validate()?;
        let t = &self.train;
        let positive = [
            ("train.imle_epochs", t.imle_epochs as i64),
            ("train.imle_batch_size", t.imle_batch_size),
            ("train.imle_candidates", t.imle_candidates),
            ("train.imle_block_entries", t.imle_block_entries),
            ("eval.samples", self.eval.samples),
            ("eval.encode_steps", self.eval.encode_steps as i64),
            ("eval.encode_starts", self.eval.encode_starts),
        ];
        for (key, v) in positive {
            if v < 1 {
                return Err(Error::config(format!("{key} must be positive, got {v}")));
            }
        }
        if !(self.eval.encode_lr.is_finite() && self.eval.encode_lr > 0.0) {
            return Err(Error::config(format!(
                "eval.encode_lr must be a positive number, got {}",
                self.eval.encode_lr
            )));
        }
        let batch_norm = self.model.generator.batch_norm || self.model.mapper.batch_norm;
        if batch_norm && (run.train.batch_size < 2 || t.imle_batch_size < 2) {
            return Err(Error::config(format!(
                "batch norm needs at least 2 items per batch, got train.batch_size = {} and \
                 train.imle_batch_size = {}",
                run.train.batch_size, t.imle_batch_size
            )));
        }
        Ok(())
    }

    fn build(&self, run: &RunConfig, device: Device) -> Result<Box<dyn Task>> {
        let train_set = self.data.load_train()?;
        let [c, h, w] = self.model.generator.out_shape;
        if train_set.shape() != [c, h, w] {
            return Err(Error::config(format!(
                "{} images are {:?} but model.generator.out_shape is {:?}; make them agree",
                self.data.dataset,
                train_set.shape(),
                [c, h, w]
            )));
        }
        let vs = VarStore::new(device);
        let model = GlannModel::new(&vs.root(), train_set.len() as i64, &self.model)?;
        Ok(Box::new(GlannTask {
            config: self.clone(),
            vs,
            model,
            train_set,
            device,
            seed: run.seed,
        }))
    }
}

/// A GLANN model with its configuration and training images.
struct GlannTask {
    config: GlannConfig,
    vs: VarStore,
    model: GlannModel,
    train_set: ImageDataset,
    device: Device,
    seed: u64,
}

/// The report of `genflow eval` on a GLANN run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GlannReport {
    pub dataset: String,
    /// Training images (= codes).
    pub train_images: usize,
    /// Mean over the training images of the mean squared pixel difference between an image and
    /// its reconstruction `G(z_i)` (intensities in `[0, 1]`).
    pub recon_mse: f64,
    /// The training loss `[loss]` of the reconstructions, averaged over the training images.
    pub recon_loss: f64,
    /// The largest `| |z_i| - 1 |` over the codes.
    pub codes_sphere_deviation: f64,
    /// The IMLE regression error at the end, `mean |T(e_nn(i)) - z_i|^2` over the entries.
    pub imle_regression_mse: f64,
    /// Mean squared distance from a GLANN sample's code `T(e)` to the nearest training code.
    pub glann_code_nn_sq_distance: f64,
    /// The same for codes of the GLO Gaussian.
    pub gaussian_code_nn_sq_distance: f64,
    /// Samples of each sampler behind the two numbers above.
    pub samples: i64,
}

/// Which phase a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Glo,
    /// Step `step` of the IMLE phase (counted from its start).
    Imle { step: u64 },
}

/// The lengths of the two phases, in optimiser steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Schedule {
    glo_steps: u64,
    glo_per_epoch: u64,
    imle_per_epoch: u64,
    imle_per_round: u64,
    imle_steps: u64,
}

impl Schedule {
    fn new(config: &GlannConfig, run: &RunConfig, n: usize) -> Self {
        let glo_per_epoch = (n as u64).div_ceil(run.train.batch_size as u64);
        let glo_steps = run
            .train
            .steps
            .unwrap_or_else(|| run.train.epochs.unwrap_or(1) * glo_per_epoch);
        let t = &config.train;
        let imle_per_epoch = (n as u64).div_ceil(t.imle_batch_size as u64);
        let imle_per_round = t.imle_epochs * imle_per_epoch;
        Schedule {
            glo_steps,
            glo_per_epoch,
            imle_per_epoch,
            imle_per_round,
            imle_steps: t.imle_rounds * imle_per_round,
        }
    }

    fn phase(&self, step: u64) -> Phase {
        if step < self.glo_steps {
            Phase::Glo
        } else {
            Phase::Imle {
                step: step - self.glo_steps,
            }
        }
    }
}

/// The two-phase objective (see the module docs).
struct GlannObjective<'a> {
    task: &'a GlannTask,
    schedule: Schedule,
    glo_batch: usize,
    /// Whether the generator and the codes are frozen in the optimiser (IMLE phase).
    frozen: bool,
    /// What the latest IMLE search found, for the evaluations' metrics.
    last_search: Vec<(String, f64)>,
}

impl GlannObjective<'_> {
    /// The training images `index` as intensities on the device.
    fn images(&self, index: &Tensor) -> Result<Tensor> {
        self.task.intensities(&self.task.train_set.images.f_index_select(0, index)?)
    }

    /// Replaces the codes by PCA codes of the training images (before the first step).
    fn init_pca_codes(&self) -> Result<()> {
        let task = self.task;
        tch::manual_seed(derived_seed(task.seed, Stream::Noise, 0) as i64);
        let mut z = pca_codes(
            &task.train_set.images,
            task.train_set.levels,
            task.config.model.n_z,
            task.device,
        )?;
        project_to_sphere(&mut z)?;
        tch::no_grad(|| task.model.codes.shallow_clone().f_copy_(&z))?;
        Ok(())
    }

    /// The search of IMLE round `round`: each code's nearest noise into `imle.noise`.
    fn search(&mut self, round: u64) -> Result<Vec<(String, f64)>> {
        let task = self.task;
        let t = &task.config.train;
        tch::manual_seed(derived_seed(task.seed, Stream::Noise, round + 1) as i64);
        let n = task.train_set.len() as i64;
        let found = imle::search_round(
            &task.model.mapper,
            &task.model.codes,
            t.imle_candidates * n,
            t.imle_block_entries,
        )?;
        tch::no_grad(|| task.model.imle_noise.shallow_clone().f_copy_(&found.noise))?;
        tracing::info!(
            "IMLE round {round}: mean squared distance to the nearest candidate {:.5}, {} \
             distinct candidates chosen",
            found.mean_sq_distance,
            found.distinct
        );
        self.last_search = vec![
            ("imle_nn_sq_distance".into(), found.mean_sq_distance),
            ("imle_distinct".into(), found.distinct as f64),
        ];
        Ok(self.last_search.clone())
    }

    fn glo_loss(&self, step: u64) -> Result<(Tensor, Vec<(String, f64)>)> {
        let task = self.task;
        if step == 0 && task.config.model.codes == CodeInit::Pca {
            self.init_pca_codes()?;
        }
        let n = task.train_set.len();
        let index = epoch_index(n, task.seed, step, self.glo_batch)?;
        let images = self.images(&index)?;
        let index = index.f_to_device(task.device)?;
        let loss = task.model.glo_loss(&task.config.loss, &images, &index)?;
        let value = loss.double_value(&[]);
        Ok((loss, vec![("glo_loss".into(), value)]))
    }

    fn imle_loss(&mut self, step: u64) -> Result<(Tensor, Vec<(String, f64)>)> {
        let task = self.task;
        let s = &self.schedule;
        let (round, within) = (step / s.imle_per_round, step % s.imle_per_round);
        let mut metrics = if within == 0 {
            self.search(round)?
        } else {
            Vec::new()
        };
        let order_seed = derived_seed(task.seed, Stream::Noise, round + 1);
        let batch = task.config.train.imle_batch_size as usize;
        let index = epoch_index(task.train_set.len(), order_seed, within, batch)?
            .f_to_device(task.device)?;
        let noise = task.model.imle_noise.f_index_select(0, &index)?;
        let codes = task.model.codes.f_index_select(0, &index)?;
        let loss = imle::regression_loss(&task.model.mapper, &noise, &codes)?;
        metrics.push(("imle_loss".into(), loss.double_value(&[])));
        Ok((loss, metrics))
    }
}

impl Objective for GlannObjective<'_> {
    fn loss(&mut self, step: u64) -> Result<(Tensor, Vec<(String, f64)>)> {
        match self.schedule.phase(step) {
            Phase::Glo => self.glo_loss(step),
            Phase::Imle { step } => self.imle_loss(step),
        }
    }

    fn update(&mut self, step: u64, optimizer: &mut Optimizer) -> Result<Update> {
        if matches!(self.schedule.phase(step), Phase::Imle { .. }) && !self.frozen {
            optimizer.set_frozen("generator.*", true)?;
            optimizer.set_frozen(CODES, true)?;
            self.frozen = true;
        }
        optimizer.zero_grad();
        let (loss, metrics) = self.loss(step)?;
        descend(optimizer, &loss, metrics)
    }

    fn after_step(&mut self, step: u64) -> Result<()> {
        if self.schedule.phase(step) == Phase::Glo {
            project_to_sphere(&mut self.task.model.codes.shallow_clone())?;
        }
        Ok(())
    }

    /// The reconstruction error of the first training images and the latest IMLE search's
    /// figures; no best checkpoint is kept (score `+inf`): the two phases share no score, and the
    /// run's model is its last state.
    fn evaluate(&mut self, _step: u64) -> Result<Option<Evaluation>> {
        let n = EVAL_IMAGES.min(self.task.train_set.len() as i64);
        let index = Tensor::f_arange(n, (Kind::Int64, Device::Cpu))?;
        let (mse, _) = self.task.reconstruction_errors(&index)?;
        let mut metrics = vec![("train_recon_mse".into(), mse)];
        metrics.extend(self.last_search.iter().cloned());
        Ok(Some(Evaluation {
            metrics,
            score: f64::INFINITY,
        }))
    }
}

impl GlannTask {
    fn levels(&self) -> f64 {
        f64::from(self.train_set.levels)
    }

    /// Stored pixels (`u8`) as intensities in `[0, 1]` on the device.
    fn intensities(&self, pixels: &Tensor) -> Result<Tensor> {
        Ok(pixels
            .f_to_device(self.device)?
            .f_to_kind(Kind::Float)?
            .f_div_scalar(self.levels() - 1.0)?)
    }

    /// Mean squared pixel error and mean training loss of the reconstructions of training
    /// images `index` (CPU `i64`), in batches.
    fn reconstruction_errors(&self, index: &Tensor) -> Result<(f64, f64)> {
        let (mut mse, mut loss) = (0.0, 0.0);
        let n = index.size()[0];
        for chunk in index.split(EVAL_BATCH, 0) {
            let x = self.intensities(&self.train_set.images.f_index_select(0, &chunk)?)?;
            let x_hat = self.model.reconstruct(&chunk.f_to_device(self.device)?)?;
            let d = tch::no_grad(|| self.config.loss.per_image(&x_hat, &x))?;
            mse += f64::try_from(x_hat.f_sub(&x)?.f_square()?.f_sum(Kind::Double)?)?;
            loss += f64::try_from(d.f_sum(Kind::Double)?)?;
        }
        let values = self.config.model.generator.out_shape.iter().product::<i64>() as f64;
        Ok((mse / (n as f64 * values), loss / n as f64))
    }

    /// GLANN codes `T(e)` of `n` noise vectors drawn from `seed`.
    fn glann_codes(&self, n: i64, seed: u64) -> Result<Tensor> {
        tch::manual_seed(derived_seed(seed, Stream::Sample, 0) as i64);
        let e = Tensor::f_randn(
            [n, self.model.mapper.noise_dim()],
            (Kind::Float, self.device),
        )?;
        tch::no_grad(|| self.model.mapper.forward(&e, false))
    }

    /// Codes of the GLO baseline: `n` draws from the Gaussian fitted to the codes, from `seed`.
    fn gaussian_codes(&self, n: i64, seed: u64) -> Result<Tensor> {
        let gaussian = CodeGaussian::fit(&self.model.codes.f_detach()?)?;
        tch::manual_seed(derived_seed(seed, Stream::Sample, 1) as i64);
        gaussian.sample(n)
    }

    /// Images `G(z)` of codes `z`, in batches, on the CPU.
    fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let parts = z
            .split(EVAL_BATCH, 0)
            .iter()
            .map(|c| -> Result<Tensor> {
                let x = tch::no_grad(|| self.model.generator.forward(c, false))?;
                Ok(x.f_to_device(Device::Cpu)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::f_cat(&parts, 0)?)
    }

    /// The mean squared distance of each code of `z` to its nearest training code.
    fn code_coverage(&self, z: &Tensor) -> Result<f64> {
        let mut z = z.f_detach()?;
        project_to_sphere(&mut z)?;
        let codes = self.model.codes.f_detach()?;
        let blocks = Blocks::within(
            self.config.train.imle_block_entries,
            z.size()[0],
            codes.size()[0],
        )?;
        let found = nearest(&z, &codes, blocks)?;
        Ok(f64::try_from(found.sq_distance.f_mean(Kind::Double)?)?)
    }

    /// `samples.png`: 64 GLANN samples (left) beside 64 GLO-Gaussian samples (right), a grey
    /// column between them.
    fn write_samples(&self, run: &RunConfig, path: &Path) -> Result<()> {
        let glann = self.decode(&self.glann_codes(PICTURE_SAMPLES, run.seed)?)?;
        let gaussian = self.decode(&self.gaussian_codes(PICTURE_SAMPLES, run.seed)?)?;
        let [c, h, w] = self.config.model.generator.out_shape;
        let gap = Tensor::f_full([1, c, h, w], 0.5, (Kind::Float, Device::Cpu))?;
        let rows = (0..8)
            .map(|r| -> Result<Tensor> {
                Ok(Tensor::f_cat(
                    &[glann.f_narrow(0, 8 * r, 8)?, gap.shallow_clone(), gaussian.f_narrow(0, 8 * r, 8)?],
                    0,
                )?)
            })
            .collect::<Result<Vec<_>>>()?;
        plots::save_image_grid(&Tensor::f_cat(&rows, 0)?, 17, path)
    }

    /// `interpolations.png`: per row, spherical interpolation from the code of training image
    /// `i` to that of image `i + pairs`.
    fn write_interpolations(&self, path: &Path) -> Result<()> {
        let (pairs, steps) = INTERPOLATIONS;
        let n = self.train_set.len() as i64;
        let pairs = pairs.min(n / 2).max(1);
        let from = self.model.codes.f_narrow(0, 0, pairs)?.f_detach()?;
        let to = self.model.codes.f_narrow(0, pairs.min(n - 1), pairs)?.f_detach()?;
        let t = Tensor::f_linspace(0.0, 1.0, steps, (Kind::Float, self.device))?;
        let z = slerp(&from, &to, &t)?;
        plots::save_image_grid(&self.decode(&z)?, steps as usize, path)
    }
}

/// Spherical interpolation between unit rows `a` and `b` `[P, d]` at each `t` `[S]`:
/// `(sin((1 - t) w) a + sin(t w) b) / sin w`, `w` the angle between them (linear when `w` is
/// tiny), as `[P * S, d]`, row `p * S + s` for pair `p` at `t_s`.
fn slerp(a: &Tensor, b: &Tensor, t: &Tensor) -> Result<Tensor> {
    let cos = a
        .f_mul(b)?
        .f_sum_dim_intlist([1i64].as_slice(), true, a.kind())?
        .f_clamp(-1.0, 1.0)?;
    let w = cos.f_acos()?.f_clamp_min(1e-6)?; // [P, 1]
    let t = t.f_unsqueeze(0)?; // [1, S]
    let sin_w = w.f_sin()?;
    let ca = w.f_mul(&t.f_neg()?.f_add_scalar(1.0)?)?.f_sin()?.f_div(&sin_w)?; // [P, S]
    let cb = w.f_mul(&t)?.f_sin()?.f_div(&sin_w)?;
    let z = ca
        .f_unsqueeze(2)?
        .f_mul(&a.f_unsqueeze(1)?)?
        .f_add(&cb.f_unsqueeze(2)?.f_mul(&b.f_unsqueeze(1)?)?)?;
    let size = z.size();
    Ok(z.f_reshape([size[0] * size[1], size[2]])?)
}

impl Task for GlannTask {
    fn vars(&self) -> &VarStore {
        &self.vs
    }

    fn data_kind(&self) -> DataKind {
        DataKind::Images {
            shape: self.config.model.generator.out_shape,
            levels: self.train_set.levels,
        }
    }

    fn training(&self, run: &RunConfig) -> Result<Training<'_>> {
        let n = self.train_set.len();
        let batch_norm = self.config.model.generator.batch_norm || self.config.model.mapper.batch_norm;
        let batches = [
            ("train.batch_size", run.train.batch_size),
            ("train.imle_batch_size", self.config.train.imle_batch_size),
        ];
        for (key, b) in batches {
            if batch_norm && (n < 2 || n as i64 % b == 1) {
                return Err(Error::config(format!(
                    "with {n} training images and {key} = {b} an epoch's last batch holds one \
                     image, which batch norm cannot normalise; change {key}"
                )));
            }
        }
        let schedule = Schedule::new(&self.config, run, n);
        let plan = Plan {
            steps: schedule.glo_steps + schedule.imle_steps,
            steps_per_epoch: Some(schedule.glo_per_epoch),
            eval_every: Some(run.train.eval_every.unwrap_or(schedule.glo_per_epoch)),
        };
        tracing::info!(
            "GLANN: {} GLO steps ({} per epoch), then {} IMLE rounds of {} steps ({} per epoch)",
            schedule.glo_steps,
            schedule.glo_per_epoch,
            self.config.train.imle_rounds,
            schedule.imle_per_round,
            schedule.imle_per_epoch
        );
        Ok(Training {
            objective: Box::new(GlannObjective {
                task: self,
                schedule,
                glo_batch: run.train.batch_size as usize,
                frozen: false,
                last_search: Vec::new(),
            }),
            plan,
        })
    }

    fn write_pictures(&self, run: &RunConfig, out_dir: &Path) -> Result<()> {
        self.write_samples(run, &out_dir.join("samples.png"))?;
        let n = RECONSTRUCTED.min(self.train_set.len() as i64);
        let index = Tensor::f_arange(n, (Kind::Int64, Device::Cpu))?;
        let x = self.intensities(&self.train_set.images.f_narrow(0, 0, n)?)?;
        let x_hat = self.model.reconstruct(&index.f_to_device(self.device)?)?;
        let both = Tensor::f_cat(&[x, x_hat], 0)?;
        plots::save_image_grid(&both, 8, &out_dir.join("reconstructions.png"))?;
        self.write_interpolations(&out_dir.join("interpolations.png"))?;
        super::write_curves(out_dir)
    }

    fn evaluate(&self, run: &RunConfig) -> Result<serde_json::Value> {
        let n = self.train_set.len() as i64;
        let index = Tensor::f_arange(n, (Kind::Int64, Device::Cpu))?;
        let (recon_mse, recon_loss) = self.reconstruction_errors(&index)?;
        let imle_regression_mse = tch::no_grad(|| -> Result<f64> {
            let mut total = 0.0;
            for (e, z) in self
                .model
                .imle_noise
                .split(EVAL_BATCH, 0)
                .iter()
                .zip(self.model.codes.split(EVAL_BATCH, 0))
            {
                let t = self.model.mapper.forward(e, false)?;
                total += f64::try_from(t.f_sub(&z)?.f_square()?.f_sum(Kind::Double)?)?;
            }
            Ok(total / (n * self.config.model.n_z) as f64)
        })?;
        let samples = self.config.eval.samples;
        let glann = self.glann_codes(samples, run.seed)?;
        let gaussian = self.gaussian_codes(samples, run.seed)?;
        let report = GlannReport {
            dataset: self.config.data.dataset.to_string(),
            train_images: self.train_set.len(),
            recon_mse,
            recon_loss,
            codes_sphere_deviation: sphere_deviation(&self.model.codes)?,
            imle_regression_mse,
            glann_code_nn_sq_distance: self.code_coverage(&glann)?,
            gaussian_code_nn_sq_distance: self.code_coverage(&gaussian)?,
            samples,
        };
        serde_json::to_value(report).map_err(|e| Error::config(e.to_string()))
    }

    fn sample(&self, run: &RunConfig, options: &SampleOptions) -> Result<Tensor> {
        let z = self.glann_codes(options.n, options.seed.unwrap_or(run.seed))?;
        self.decode(&z)
    }

    fn code_fit(&self) -> Option<&dyn CodeFit> {
        Some(self)
    }

    fn reference_data(&self) -> Option<&ImageDataConfig> {
        Some(&self.config.data)
    }

    fn baseline_samplers(&self) -> &'static [&'static str] {
        &[GLO_GAUSSIAN]
    }

    /// `glo_gaussian`: the GLO baseline, images of codes from the Gaussian fitted to the codes.
    fn sample_baseline(
        &self,
        run: &RunConfig,
        name: &str,
        options: &SampleOptions,
    ) -> Result<Tensor> {
        if name != GLO_GAUSSIAN {
            return Err(Error::config(format!(
                "GLANN has one baseline sampler, '{GLO_GAUSSIAN}', not '{name}'"
            )));
        }
        let z = self.gaussian_codes(options.n, options.seed.unwrap_or(run.seed))?;
        self.decode(&z)
    }
}

impl CodeFit for GlannTask {
    /// Each image's code: the training code (of `eval.encode_starts` spread over the table) whose
    /// image is nearest in pixels, then `eval.encode_steps` Adam steps (betas 0.5, 0.999,
    /// `eval.encode_lr`) on the training loss with the generator fixed in evaluation mode, the code
    /// projected onto the sphere after each step. The gradient reaches the codes only
    /// (`autograd::grad` with respect to them), not the generator's weights.
    fn fit_codes(&self, v: &Tensor) -> Result<FittedCodes> {
        let [c, h, w] = self.config.model.generator.out_shape;
        let size = v.size();
        if size.len() != 4 || size[1..] != [c, h, w] || size[0] < 1 {
            return Err(Error::shape(format!(
                "this GLANN generator makes images [n, {c}, {h}, {w}], got shape {size:?}"
            )));
        }
        let e = &self.config.eval;
        let n_codes = self.train_set.len() as i64;
        let starts = e.encode_starts.min(n_codes);
        let start_index = Tensor::f_linspace(0.0, (n_codes - 1) as f64, starts, (Kind::Double, Device::Cpu))?
            .f_round()?
            .f_to_kind(Kind::Int64)?
            .f_to_device(self.device)?;
        let start_codes = self.model.codes.f_detach()?.f_index_select(0, &start_index)?;
        let start_images = self.decode(&start_codes)?.f_reshape([starts, -1])?;
        let mut codes = Vec::new();
        let mut errors = Vec::new();
        for x in v.f_to_kind(Kind::Float)?.f_clamp(0.0, 1.0)?.split(EVAL_BATCH, 0) {
            let nn = nearest(
                &x.f_reshape([x.size()[0], -1])?,
                &start_images,
                Blocks::within(DEFAULT_BLOCK_ENTRIES, x.size()[0], starts)?,
            )?;
            let z0 = start_codes.f_index_select(0, &nn.index.f_to_device(self.device)?)?;
            let (z, mse) = self.fit_batch(&x.f_to_device(self.device)?, &z0)?;
            codes.push(z.f_to_device(Device::Cpu)?);
            errors.extend(mse);
        }
        Ok(FittedCodes {
            z: Tensor::f_cat(&codes, 0)?,
            reconstruction_mse: errors,
            steps: e.encode_steps,
        })
    }
}

impl GlannTask {
    /// Fits codes starting at `z0` to images `x` (both on the device); the codes and the
    /// per-image MSE of their reconstructions.
    fn fit_batch(&self, x: &Tensor, z0: &Tensor) -> Result<(Tensor, Vec<f64>)> {
        let e = &self.config.eval;
        let vs = VarStore::new(self.device);
        let mut z = vs.root().var_copy("z", z0);
        let config = OptimConfig {
            betas: (0.5, 0.999),
            ..OptimConfig::new(OptimKind::Adam, e.encode_lr)
        };
        let mut optimizer = Optimizer::new(&vs, &config)?;
        for _ in 0..e.encode_steps {
            optimizer.zero_grad();
            let x_hat = self.model.generator.forward(&z, false)?;
            let loss = self
                .config
                .loss
                .per_image(&x_hat, x)?
                .f_sum(Kind::Float)?;
            let grad = Tensor::f_run_backward(&[&loss], &[&z], false, false)?;
            // A surrogate whose gradient with respect to z is `grad`, for the optimiser.
            z.f_mul(&grad[0])?.f_sum(Kind::Float)?.f_backward()?;
            optimizer.step()?;
            project_to_sphere(&mut z)?;
        }
        let x_hat = tch::no_grad(|| self.model.generator.forward(&z, false))?;
        let mse = x_hat
            .f_sub(x)?
            .f_square()?
            .f_mean_dim([1i64, 2, 3].as_slice(), false, Kind::Double)?;
        Ok((z.f_detach()?, Vec::<f64>::try_from(&mse)?))
    }
}
