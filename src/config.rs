//! Run configurations: TOML files or presets shipped in the binary, with `--set key=value` overrides,
//! validated before any model is built.
//!
//! ```
//! use genflow::config::RunConfig;
//! let cfg = RunConfig::resolve("iresnet-toy", &["data.density=checkerboard".into()]).unwrap();
//! assert_eq!(cfg.toy_density().unwrap().to_string(), "checkerboard");
//! assert!(RunConfig::resolve("iresnet-toy", &["model.spectral.coeff=1.2".into()]).is_err());
//! ```

use crate::data::toy::ToyDensity;
use crate::data::DatasetName;
use crate::distributions::BaseKind;
use crate::flows::{FixedPointConfig, MixingLayer};
use crate::linalg::logdet::LogDetEstimator;
use crate::models::{ClassifierConfig, ImageFlowConfig};
use crate::nn::{ActivationKind, SpectralConfig};
use crate::optim::OptimConfig;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A preset: its name, a one-line description and its TOML text.
pub struct Preset {
    pub name: &'static str,
    pub summary: &'static str,
    pub toml: &'static str,
}

/// The presets shipped in the binary (`genflow presets` lists them).
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "iresnet-toy",
        summary: "i-ResNet density on a 2-D toy (8gaussians; set data.density), exact log-det, ~5 min on 2 CPU cores",
        toml: include_str!("../presets/iresnet-toy.toml"),
    },
    Preset {
        name: "iresnet-digits",
        summary: "multi-scale i-ResNet density on the 8x8 digits, 1440 steps, ~23 min on one busy CPU core",
        toml: include_str!("../presets/iresnet-digits.toml"),
    },
    Preset {
        name: "iresnet-mnist",
        summary: "multi-scale i-ResNet density on MNIST, 3 epochs in under an hour on one CPU core",
        toml: include_str!("../presets/iresnet-mnist.toml"),
    },
    Preset {
        name: "iresnet-mnist-paper",
        summary: "Residual Flows' MNIST model (16-16-16 blocks, hidden 512, c 0.98), for GPUs",
        toml: include_str!("../presets/iresnet-mnist-paper.toml"),
    },
    Preset {
        name: "iresnet-cifar10-paper",
        summary: "the official i-ResNet CIFAR-10 density model (16-16-16, 512 channels, Adamax 3e-3), for GPUs",
        toml: include_str!("../presets/iresnet-cifar10-paper.toml"),
    },
    Preset {
        name: "iresnet-classifier-mnist",
        summary: "i-ResNet classifier on MNIST, 4 epochs, ~25 min on 2 CPU cores (99.1%)",
        toml: include_str!("../presets/iresnet-classifier-mnist.toml"),
    },
    Preset {
        name: "iresnet-classifier-cifar10-paper",
        summary: "the official i-ResNet CIFAR-10 classifier (7-7-7, 32-64-128, SGD 0.1), for GPUs",
        toml: include_str!("../presets/iresnet-classifier-cifar10-paper.toml"),
    },
];

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Density estimation of a 2-D toy distribution with a vector i-ResNet flow (`[model]`).
    #[default]
    ToyDensity,
    /// Density estimation of images with a multi-scale i-ResNet (`[image_model]`), in bits/dim.
    ImageDensity,
    /// Image classification with an i-ResNet classifier (`[classifier]`).
    Classifier,
}

/// Where the data of a run comes from.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The 2-D toy density (task `toy-density`).
    #[serde(default)]
    pub density: Option<ToyDensity>,
    /// The image data set (tasks `image-density` and `classifier`).
    #[serde(default)]
    pub dataset: Option<DatasetName>,
    /// The data folder (default: `$GENFLOW_DATA` or `~/.cache/genflow/data`).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Train on the first this many training images only.
    #[serde(default)]
    pub train_subset: Option<usize>,
    /// Size of the test set: toy samples drawn (default 20000), or the first test images used
    /// (default: all).
    #[serde(default)]
    pub test_size: Option<usize>,
}

/// The default number of toy test samples.
pub const TOY_TEST_SIZE: usize = 20_000;

/// The architecture of a vector i-ResNet flow (`[model]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Number of i-ResNet blocks.
    pub blocks: usize,
    /// Hidden widths of each block's MLP `g` (e.g. `[128, 128, 128]` for 2-128-128-128-2).
    pub hidden: Vec<i64>,
    #[serde(default)]
    pub activation: ActivationKind,
    /// ActNorm before every block.
    #[serde(default)]
    pub actnorm: bool,
    #[serde(default)]
    pub base: BaseKind,
    #[serde(default)]
    pub spectral: SpectralConfig,
    /// A matrix-exponential layer after every block.
    #[serde(default)]
    pub mixing: MixingLayer,
}

/// Training settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimiser steps (toy runs), or derived from `epochs` for data sets.
    #[serde(default)]
    pub steps: Option<u64>,
    /// Passes over the training set (image runs).
    #[serde(default)]
    pub epochs: Option<u64>,
    pub batch_size: i64,
    /// Checkpoint every this many steps (and at the end).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Append a line to `metrics.jsonl` every this many steps.
    #[serde(default = "default_log_every")]
    pub log_every: u64,
    /// Evaluate on the test set every this many steps (image runs; default: every epoch).
    #[serde(default)]
    pub eval_every: Option<u64>,
    /// Decay of an exponential moving average of the weights used for evaluation (e.g. 0.999).
    #[serde(default)]
    pub ema_decay: Option<f64>,
    /// The log-det estimator used for the training loss.
    #[serde(default)]
    pub logdet: LogDetEstimator,
    /// Wall-clock budget of one `genflow train` invocation in minutes: when it is spent, training
    /// ends early as if the last step were reached (checkpoint, final evaluation, pictures).
    #[serde(default)]
    pub max_minutes: Option<f64>,
}

fn default_checkpoint_every() -> u64 {
    1000
}
fn default_log_every() -> u64 {
    50
}

/// Evaluation settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// The log-det estimator used for test NLL (exact for 2-D).
    #[serde(default = "exact")]
    pub logdet: LogDetEstimator,
    #[serde(default)]
    pub inverse: FixedPointConfig,
    /// Temperature of samples drawn for pictures (the base's standard deviation is scaled by it).
    #[serde(default = "one")]
    pub temperature: f64,
}

fn one() -> f64 {
    1.0
}

fn exact() -> LogDetEstimator {
    LogDetEstimator::Exact
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            logdet: LogDetEstimator::Exact,
            inverse: FixedPointConfig::default(),
            temperature: 1.0,
        }
    }
}

/// A whole run: what `genflow train` reads and stores beside its checkpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    #[serde(default)]
    pub task: Task,
    /// Seed of every random draw (weights, data, probes).
    #[serde(default)]
    pub seed: u64,
    pub data: DataConfig,
    /// The vector flow (task `toy-density`).
    #[serde(default)]
    pub model: Option<ModelConfig>,
    /// The image flow (task `image-density`).
    #[serde(default)]
    pub image_model: Option<ImageFlowConfig>,
    /// The classifier (task `classifier`).
    #[serde(default)]
    pub classifier: Option<ClassifierConfig>,
    pub train: TrainConfig,
    #[serde(default)]
    pub eval: EvalConfig,
    #[serde(default)]
    pub optim: OptimConfig,
}

fn missing(what: &str, task: Task) -> Error {
    Error::config(format!("task {task:?} needs {what} in the configuration"))
}

impl RunConfig {
    /// The toy density of a `toy-density` run.
    pub fn toy_density(&self) -> Result<ToyDensity> {
        self.data
            .density
            .ok_or_else(|| missing("data.density", self.task))
    }
    /// The vector flow of a `toy-density` run.
    pub fn vector_model(&self) -> Result<&ModelConfig> {
        self.model
            .as_ref()
            .ok_or_else(|| missing("a [model] table", self.task))
    }
    /// The image flow of an `image-density` run.
    pub fn image_flow(&self) -> Result<&ImageFlowConfig> {
        self.image_model
            .as_ref()
            .ok_or_else(|| missing("an [image_model] table", self.task))
    }
    /// The classifier of a `classifier` run.
    pub fn classifier_model(&self) -> Result<&ClassifierConfig> {
        self.classifier
            .as_ref()
            .ok_or_else(|| missing("a [classifier] table", self.task))
    }
    /// The image data set of an image run.
    pub fn dataset(&self) -> Result<DatasetName> {
        self.data
            .dataset
            .ok_or_else(|| missing("data.dataset", self.task))
    }
    /// The data folder.
    pub fn data_dir(&self) -> PathBuf {
        self.data
            .dir
            .clone()
            .unwrap_or_else(crate::data::default_data_dir)
    }

    /// Parses TOML text and validates it.
    pub fn from_toml(text: &str) -> Result<Self> {
        let value: toml::Value =
            toml::from_str(text).map_err(|e| Error::config(format!("TOML: {}", e.message())))?;
        Self::from_value(value)
    }

    fn from_value(value: toml::Value) -> Result<Self> {
        let cfg: RunConfig = value
            .try_into()
            .map_err(|e: toml::de::Error| Error::config(e.message().trim().to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// A preset name or a TOML file path, with `key=value` overrides applied (dotted keys, values
    /// parsed as TOML and otherwise taken as strings).
    pub fn resolve(name_or_path: &str, overrides: &[String]) -> Result<Self> {
        let text = match PRESETS.iter().find(|p| p.name == name_or_path) {
            Some(preset) => preset.toml.to_string(),
            None => {
                let path = Path::new(name_or_path);
                if !path.exists() {
                    let names: Vec<_> = PRESETS.iter().map(|p| p.name).collect();
                    return Err(Error::config(format!(
                        "'{name_or_path}' is neither a preset ({}) nor an existing TOML file",
                        names.join(", ")
                    )));
                }
                std::fs::read_to_string(path).map_err(|e| Error::file(path, e.to_string()))?
            }
        };
        let mut value: toml::Value =
            toml::from_str(&text).map_err(|e| Error::config(format!("TOML: {}", e.message())))?;
        for item in overrides {
            apply_override(&mut value, item)?;
        }
        Self::from_value(value)
    }

    /// The TOML text of this configuration (stored in checkpoints).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::config(format!("cannot serialise config: {e}")))
    }

    /// Checks ranges and consistency; the message says which key to change.
    pub fn validate(&self) -> Result<()> {
        self.train.logdet.validate()?;
        if let Some(m) = self.train.max_minutes {
            if !(m.is_finite() && m > 0.0) {
                return Err(Error::config(format!(
                    "train.max_minutes = {m}: the time budget must be a positive number of minutes (or left out)"
                )));
            }
        }
        self.eval.logdet.validate()?;
        match self.task {
            Task::ToyDensity => {
                self.toy_density()?;
                let model = self.vector_model()?;
                model
                    .spectral
                    .validate()
                    .map_err(|e| Error::config(format!("model.spectral: {e}")))?;
                if model.blocks == 0 {
                    return Err(Error::config("model.blocks must be positive"));
                }
                if let Some(w) = model.hidden.iter().find(|&&w| w <= 0) {
                    return Err(Error::config(format!(
                        "model.hidden widths must be positive, got {w}"
                    )));
                }
                if self.train.steps.is_none() {
                    return Err(Error::config("toy runs need train.steps"));
                }
            }
            Task::ImageDensity => {
                self.dataset()?;
                self.image_flow()?
                    .validate()
                    .map_err(|e| Error::config(format!("image_model: {e}")))?;
            }
            Task::Classifier => {
                self.dataset()?;
                self.classifier_model()?
                    .validate()
                    .map_err(|e| Error::config(format!("classifier: {e}")))?;
            }
        }
        if self.train.steps.is_none() && self.train.epochs.is_none() {
            return Err(Error::config("set train.steps or train.epochs"));
        }
        if let Some(d) = self.train.ema_decay {
            if !(0.0..1.0).contains(&d) {
                return Err(Error::config(format!(
                    "train.ema_decay must lie in [0, 1), got {d}"
                )));
            }
        }
        let positive = [
            ("train.steps", self.train.steps.unwrap_or(1) as i64),
            ("train.epochs", self.train.epochs.unwrap_or(1) as i64),
            ("train.batch_size", self.train.batch_size),
            ("train.checkpoint_every", self.train.checkpoint_every as i64),
            ("train.log_every", self.train.log_every as i64),
            (
                "train.eval_every",
                self.train.eval_every.unwrap_or(1) as i64,
            ),
            ("data.test_size", self.data.test_size.unwrap_or(1) as i64),
            (
                "data.train_subset",
                self.data.train_subset.unwrap_or(1) as i64,
            ),
        ];
        for (key, v) in positive {
            if v <= 0 {
                return Err(Error::config(format!("{key} must be positive, got {v}")));
            }
        }
        Ok(())
    }
}

/// Sets `a.b.c = value` in a TOML tree.
fn apply_override(root: &mut toml::Value, item: &str) -> Result<()> {
    let (key, raw) = item
        .split_once('=')
        .ok_or_else(|| Error::config(format!("--set expects key=value, got '{item}'")))?;
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.trim().split('.').collect();
    let (last, parents) = parts
        .split_last()
        .ok_or_else(|| Error::config(format!("--set: empty key in '{item}'")))?;
    let mut node = root;
    for part in parents {
        let table = node
            .as_table_mut()
            .ok_or_else(|| Error::config(format!("--set {key}: '{part}' is not inside a table")))?;
        node = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    node.as_table_mut()
        .ok_or_else(|| Error::config(format!("--set {key}: parent is not a table")))?
        .insert(last.to_string(), value);
    Ok(())
}
