//! Tasks: one [`Task`] trait for every model family, the registry of task configurations
//! ([`TaskConfig`]), and the jobs behind the command line (train, open a trained run, evaluate,
//! sample, and use the model on one's own data).
//!
//! A task's configuration (one variant of [`TaskConfig`], chosen by `task = "..."` in TOML) holds
//! its model, data and evaluation settings and builds the task; the run-level settings (seed,
//! device, `[train]`, `[optim]`) are a [`RunConfig`]. Together they make a [`JobConfig`]. Adding a
//! model family takes its own module (configuration implementing [`TaskSpec`], the [`Task`]
//! implementation) and one line in the registry below; the command line, run folders,
//! checkpoints, resume, moving averages and reports come from the shared machinery here and in
//! [`crate::train`].
//!
//! ```
//! use genflow::tasks::{JobConfig, Run, TrainOptions};
//! let dir = tempfile::tempdir()?;
//! let job = JobConfig::resolve("iresnet-toy", &[
//!     "model.blocks=2".into(), "model.hidden=[8]".into(), "train.steps=10".into(),
//!     "train.batch_size=64".into(), "data.test_size=256".into(),
//! ])?;
//! genflow::tasks::train(&job, dir.path(), &TrainOptions::default())?;
//!
//! let run = Run::open(dir.path(), tch::Device::Cpu, Default::default())?;
//! let x = tch::Tensor::from_slice(&[0.0f32, 0.0, 2.0, 2.0]).reshape([2, 2]);
//! let log_p = run.log_prob(&x)?;                 // log p(x) per point
//! let z = run.encode(&x)?;                       // x -> z
//! let (back, items) = run.decode(&z)?;           // z -> x, with each item's convergence
//! assert_eq!(log_p.log_prob.len(), 2);
//! assert!(items.iter().all(|i| i.converged));
//! assert!(f64::try_from((back - &x).abs().max())? < 1e-4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod classification;
mod evaluate;
pub mod files;
mod image_epochs;
mod job;
pub mod quality;
mod report;
mod run;

pub use evaluate::EvalOptions;
pub use features::ImageFeatures;
pub use job::JobConfig;
pub use report::InvertibilityReport;
pub use run::{resume, train, Run, TrainOptions};

use crate::config::RunConfig;
use crate::data::ImageDataConfig;
use crate::nn::ResidualNet;
use crate::train::{Objective, Plan};
use crate::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;
use tch::{nn::VarStore, Device, Tensor};

/// Points `[n, dim]` as `kind` (the model's floating-point type) on `device`, or an error naming
/// `model` and the expected shape.
fn checked_points(
    x: &Tensor,
    dim: i64,
    kind: tch::Kind,
    device: Device,
    model: &str,
) -> Result<Tensor> {
    let size = x.size();
    if size.len() != 2 || size[1] != dim {
        return Err(Error::shape(format!(
            "{model} takes points [n, {dim}], got shape {size:?}"
        )));
    }
    Ok(x.to_kind(kind).to_device(device))
}

/// What kind of data a task's model reads and writes, as exchanged with files and the library:
/// vectors `[n, dim]`, or images `[n, C, H, W]` as intensities in `[0, 1]` (8-bit pixels / 255),
/// which each image task maps to its model's own input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DataKind {
    /// Points of `dim` numbers; pictures show `[-plot_range, plot_range]` on each axis.
    Vectors { dim: i64, plot_range: f64 },
    /// Images of `shape = [C, H, W]` whose pixels take `levels` grey levels.
    Images { shape: [i64; 3], levels: u32 },
}

/// What `train` runs: the objective (with its data) and how long the run is.
pub struct Training<'a> {
    pub objective: Box<dyn Objective + 'a>,
    pub plan: Plan,
}

/// How to draw samples: how many (at least 1), from which seed (default: the run's), at which
/// temperature (default: the task's configured one).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SampleOptions {
    pub n: i64,
    pub seed: Option<u64>,
    pub temperature: Option<f64>,
}

/// Per-item log-likelihoods of data-space items (`genflow log-prob`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogProb {
    /// `log p(x)` in nats: the log-density for vectors; for images the log-likelihood of the
    /// discrete image (its midpoint-dequantised density times the cell volume).
    pub log_prob: Vec<f64>,
    /// Bits per dimension, for images.
    pub bits_per_dim: Option<Vec<f64>>,
}

/// How the fixed-point inverse did on one item.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ItemConvergence {
    /// The most iterations any block needed for this item.
    pub iterations: i64,
    /// The largest final relative residual over the blocks (below 1 means converged).
    pub residual: f64,
    pub converged: bool,
}

/// Codes fitted to data-space items with a generator held fixed, and how well they reconstruct
/// the items (`genflow encode` of a model without an inverse).
#[derive(Debug)]
pub struct FittedCodes {
    /// The codes, `[n, n_z]`.
    pub z: Tensor,
    /// Per item, the mean squared difference between the item and the generator's image of its
    /// code, over the pixels (intensities in `[0, 1]`).
    pub reconstruction_mse: Vec<f64>,
    /// Optimiser steps taken per item.
    pub steps: u64,
}

/// A generator whose codes for new items are found by optimisation with its weights fixed
/// (GLO), since it has no encoder.
pub trait CodeFit {
    /// The codes of data-space items (see [`DataKind`]) and their reconstruction errors.
    fn fit_codes(&self, x: &Tensor) -> Result<FittedCodes>;
}

/// A model as a density over its data space.
pub trait Density {
    /// `log p` of data-space items (see [`DataKind`]), evaluated with the run's evaluation
    /// estimator.
    fn log_prob(&self, x: &Tensor) -> Result<LogProb>;
}

/// A model as an invertible map between its data space and a latent space.
pub trait Invertible {
    /// `z = f(x)` of data-space items.
    fn encode(&self, x: &Tensor) -> Result<Tensor>;
    /// `x = f^{-1}(z)` in data space, with the inverse's convergence per item.
    fn decode(&self, z: &Tensor) -> Result<(Tensor, Vec<ItemConvergence>)>;
    /// The per-item shape of latents.
    fn latent_shape(&self) -> Vec<i64>;
}

/// A model with a learned encoder into the latent space that its generator decodes (O-GAN):
/// unlike [`Invertible`], decoding is a direct map and encoding inverts it only approximately.
/// `genflow encode` and `genflow decode` use it as they use an invertible map; every item's
/// decoding "converges" at once (0 iterations, residual 0).
pub trait Encoder {
    /// `z = enc(x)` of data-space items.
    fn encode(&self, x: &Tensor) -> Result<Tensor>;
    /// `x = dec(z)` in data space.
    fn decode(&self, z: &Tensor) -> Result<Tensor>;
    /// The per-item shape of latents.
    fn latent_shape(&self) -> Vec<i64>;
}

/// One model family, built from its configuration, as the shared machinery uses it.
pub trait Task {
    /// Every parameter and buffer: what checkpoints hold and the optimiser trains.
    fn vars(&self) -> &VarStore;
    /// The data the model reads and writes.
    fn data_kind(&self) -> DataKind;
    /// The training objective over the task's data and the run's plan.
    fn training(&self, run: &RunConfig) -> Result<Training<'_>>;
    /// Writes the task's pictures into a run folder after training (the files of
    /// [`TaskSpec::OUTPUTS`]).
    fn write_pictures(&self, run: &RunConfig, out_dir: &Path) -> Result<()>;
    /// The evaluation report (`genflow eval --json`), one typed report per task.
    fn evaluate(&self, run: &RunConfig) -> Result<serde_json::Value>;
    /// The spectrally normalised residual nets, certified before evaluation and reported by
    /// their Lipschitz bound.
    fn residual_nets(&self) -> Vec<&ResidualNet> {
        Vec::new()
    }
    /// Samples in data space; tasks that cannot sample say so.
    fn sample(&self, _run: &RunConfig, _options: &SampleOptions) -> Result<Tensor> {
        Err(Error::config(
            "this task's model draws no samples; use `genflow eval`",
        ))
    }
    /// How many samples `genflow sample` draws by default.
    fn default_sample_count(&self) -> i64 {
        64
    }
    /// The model as a density, when it is one.
    fn density(&self) -> Option<&dyn Density> {
        None
    }
    /// The model as an invertible map, when it is one.
    fn invertible(&self) -> Option<&dyn Invertible> {
        None
    }
    /// The model as an encoder and a decoder that is not its inverse, when it is one.
    fn encoder(&self) -> Option<&dyn Encoder> {
        None
    }
    /// Whether `train.ema_decay` averages the trainable variable `name` (default: every one).
    fn averaged(&self, _name: &str) -> bool {
        true
    }
    /// The model as the feature network of the sample-quality metrics, when it is one.
    fn image_features(&self) -> Option<&dyn ImageFeatures> {
        None
    }
    /// The image data set the model's samples are compared with by the sample-quality metrics
    /// (`genflow eval` adds FD, KID, precision and recall for models that sample images).
    fn reference_data(&self) -> Option<&ImageDataConfig> {
        None
    }
    /// The model as a generator whose codes are fitted by optimisation, when it is one.
    fn code_fit(&self) -> Option<&dyn CodeFit> {
        None
    }
    /// Other samplers of the same model whose sample quality `genflow eval` reports beside the
    /// model's own, by name (GLANN's GLO-Gaussian baseline: `glo_gaussian`).
    fn baseline_samplers(&self) -> &'static [&'static str] {
        &[]
    }
    /// Samples of baseline sampler `name` (one of [`Task::baseline_samplers`]).
    fn sample_baseline(
        &self,
        _run: &RunConfig,
        name: &str,
        _options: &SampleOptions,
    ) -> Result<Tensor> {
        Err(Error::config(format!(
            "this task's model has no baseline sampler '{name}'"
        )))
    }
}

/// A task's configuration (one variant of [`TaskConfig`]).
pub trait TaskSpec: Serialize + DeserializeOwned + Clone + std::fmt::Debug + PartialEq {
    /// The files the task writes into a run folder besides checkpoints, metrics, the
    /// configuration and `curves.png` (removed by `train --force`).
    const OUTPUTS: &'static [&'static str];
    /// Checks the configuration together with the run-level settings; the message names the key.
    fn validate(&self, run: &RunConfig) -> Result<()>;
    /// Builds the task's model in a fresh store on `device`, its weights drawn from libtorch's
    /// generator (which the caller seeds).
    fn build(&self, run: &RunConfig, device: Device) -> Result<Box<dyn Task>>;
    /// Upgrades a configuration table stored by a format-1 checkpoint
    /// ([`crate::train::checkpoint::CONFIG_FORMAT`]) to today's layout.
    fn migrate_v1(_table: &mut toml::Table) {}
    /// `Some(why)` when this configuration trains on one process only: data-parallel training
    /// ([`TrainOptions::distributed`]) then refuses to start, saying so (`why` completes
    /// "task NAME trains on one process only"). Default: it trains data-parallel
    /// ([`crate::distributed::data_parallel`] lists what that asks of a task).
    fn single_process_only(&self) -> Option<String> {
        None
    }
}

/// Declares the task modules and the [`TaskConfig`] registry: one line per task,
/// `Variant(module::Config) = "toml name"`.
macro_rules! tasks {
    ($($(#[$doc:meta])* $variant:ident($module:ident :: $config:ident) = $name:literal,)+) => {
        $(pub mod $module;)+

        /// The configuration of one task, chosen by `task = "..."` in TOML.
        #[derive(Debug, Clone, PartialEq)]
        pub enum TaskConfig {
            $($(#[$doc])* $variant($module::$config),)+
        }

        impl TaskConfig {
            /// The names of every registered task, as written in TOML.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            /// The task's name, as written in TOML.
            pub fn name(&self) -> &'static str {
                match self {
                    $(TaskConfig::$variant(_) => $name,)+
                }
            }

            /// See [`TaskSpec::OUTPUTS`].
            pub fn outputs(&self) -> &'static [&'static str] {
                match self {
                    $(TaskConfig::$variant(_) => <$module::$config as TaskSpec>::OUTPUTS,)+
                }
            }

            /// See [`TaskSpec::validate`].
            pub fn validate(&self, run: &RunConfig) -> Result<()> {
                match self {
                    $(TaskConfig::$variant(c) => c.validate(run),)+
                }
            }

            /// See [`TaskSpec::build`].
            pub fn build(&self, run: &RunConfig, device: Device) -> Result<Box<dyn Task>> {
                match self {
                    $(TaskConfig::$variant(c) => c.build(run, device),)+
                }
            }

            /// The task's tables as TOML.
            pub fn to_table(&self) -> Result<toml::Table> {
                let value = match self {
                    $(TaskConfig::$variant(c) => toml::Table::try_from(c),)+
                };
                value.map_err(|e| Error::config(format!("cannot write the task configuration: {e}")))
            }

            /// Reads the tables of task `name` from a configuration document.
            pub fn decode(
                doc: &crate::config::ConfigDocument,
                name: &str,
                table: toml::Table,
            ) -> Result<Self> {
                match name {
                    $($name => Ok(TaskConfig::$variant(doc.decode("", table.into())?)),)+
                    other => Err(Error::config(format!(
                        "{}: unknown task '{other}' (tasks: {})",
                        doc.origin(),
                        Self::NAMES.join(", ")
                    ))),
                }
            }

            /// See [`TaskSpec::single_process_only`].
            pub fn single_process_only(&self) -> Option<String> {
                match self {
                    $(TaskConfig::$variant(c) => c.single_process_only(),)+
                }
            }

            /// See [`TaskSpec::migrate_v1`].
            pub fn migrate_v1(name: &str, table: &mut toml::Table) {
                match name {
                    $($name => <$module::$config as TaskSpec>::migrate_v1(table),)+
                    _ => {}
                }
            }
        }
    };
}

tasks! {
    /// Density estimation of a 2-D toy distribution with a vector i-ResNet flow.
    ToyDensity(toy_density::ToyDensityConfig) = "toy-density",
    /// A GAN (or O-GAN) of MLPs on a 2-D toy distribution.
    ToyGan(toy_gan::ToyGanConfig) = "toy-gan",
    /// A DCGAN-style GAN (or O-GAN) on images.
    ImageGan(image_gan::ImageGanConfig) = "image-gan",
    /// Density estimation of images with a multi-scale i-ResNet, in bits/dim.
    ImageDensity(image_density::ImageDensityConfig) = "image-density",
    /// Image classification with an i-ResNet classifier.
    Classifier(classifier::ClassifierTaskConfig) = "classifier",
    /// The feature network of the sample-quality metrics.
    FeatureClassifier(features::FeatureClassifierConfig) = "feature-classifier",
    /// Non-adversarial image generation: GLO codes and generator, then an IMLE mapper.
    Glann(glann::GlannConfig) = "glann",
}

/// Relative tolerance of the singular-value iterations run before evaluation.
const EVAL_POWER_TOL: f64 = 1e-10;
/// Most singular-value iterations per layer before evaluation.
const EVAL_POWER_MAX_ITER: usize = 5000;

/// Makes every layer's spectral-norm estimate exact before evaluation (SVD for dense and 1x1 maps,
/// subspace iteration to convergence for kxk convs: [`crate::nn::SpectralLinear::certify`]), so
/// that the normalised weights use the true spectral norms (training runs only a few iterations
/// per step, so the stored vectors lag the weights slightly) and `Lip(g) <= c^L` holds.
fn certify_for_evaluation(nets: &[&ResidualNet]) {
    for g in nets {
        g.certify_spectral_norms(EVAL_POWER_TOL, EVAL_POWER_MAX_ITER);
    }
}

/// The largest `prod_i |W_hat_i|_2` over the residual functions of a model (an upper bound on
/// every block's `Lip(g)`), computed exactly per layer; 0 for a model without any.
pub fn lipschitz_max(nets: &[&ResidualNet]) -> Result<f64> {
    nets.iter()
        .map(|g| g.lipschitz_bound())
        .try_fold(0.0, |acc: f64, l| Ok(acc.max(l?)))
}

/// Keys of `metrics.jsonl` that `curves.png` leaves out (bookkeeping, or a copy of a test metric).
const NOT_CURVES: &[&str] = &["step", "time_s", "eval_score"];

/// Draws `curves.png` from a run's `metrics.jsonl`: one panel per logged quantity (the training
/// loss, the learning rate, every test metric, ...) against the step, on a logarithmic axis where
/// a quantity spans decades.
pub fn write_curves(out_dir: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(out_dir.join(crate::train::METRICS_FILE)).unwrap_or_default();
    let mut series: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    for record in text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        let (Some(step), Some(fields)) = (
            record.get("step").and_then(|s| s.as_f64()),
            record.as_object(),
        ) else {
            continue;
        };
        for (k, v) in fields {
            let wanted = !NOT_CURVES.contains(&k.as_str()) && !k.starts_with("grad_norm/");
            if let (true, Some(v)) = (wanted, v.as_f64()) {
                series.entry(k.clone()).or_default().push((step, v));
            }
        }
    }
    // the loss first, then the test metrics, then the rest, each in name order
    let rank = |k: &str| {
        if k == "loss" {
            0
        } else if k.starts_with("test_") {
            1
        } else {
            2
        }
    };
    let mut keys: Vec<&String> = series.keys().collect();
    keys.sort_by_key(|k| (rank(k), k.to_string()));
    let panels: Vec<crate::plots::Panel> = keys
        .into_iter()
        .map(|name| crate::plots::Panel {
            title: name.clone(),
            y_label: name.clone(),
            series: vec![crate::plots::Series {
                name: name.clone(),
                points: series[name].clone(),
            }],
        })
        .collect();
    if panels.is_empty() {
        return Ok(());
    }
    crate::plots::save_panels(
        "step",
        &panels,
        &out_dir.join(crate::train::run_dir::CURVES_FILE),
    )
}
