//! Run configurations: TOML files or presets shipped in the binary, with `--set key=value` overrides,
//! validated before any model is built.
//!
//! ```
//! use genflow::config::RunConfig;
//! let cfg = RunConfig::resolve("iresnet-toy", &["data.density=checkerboard".into()]).unwrap();
//! assert_eq!(cfg.data.density.to_string(), "checkerboard");
//! assert!(RunConfig::resolve("iresnet-toy", &["model.spectral.coeff=1.2".into()]).is_err());
//! ```

use crate::data::toy::ToyDensity;
use crate::distributions::{DiagonalGaussian, Distribution, StandardNormal};
use crate::flows::FixedPointConfig;
use crate::linalg::logdet::LogDetEstimator;
use crate::nn::{ActivationKind, SpectralConfig};
use crate::optim::OptimConfig;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A preset: its name, a one-line description and its TOML text.
pub struct Preset {
    pub name: &'static str,
    pub summary: &'static str,
    pub toml: &'static str,
}

/// The presets shipped in the binary (`genflow presets` lists them).
pub const PRESETS: &[Preset] = &[Preset {
    name: "iresnet-toy",
    summary: "i-ResNet density on a 2-D toy (8gaussians; set data.density), exact log-det, ~5 min on 2 CPU cores",
    toml: include_str!("../presets/iresnet-toy.toml"),
}];

/// Where the data of a run comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The 2-D toy density.
    pub density: ToyDensity,
    /// Size of the fixed test set used by `genflow eval`.
    #[serde(default = "default_test_size")]
    pub test_size: usize,
}

fn default_test_size() -> usize {
    20_000
}

/// The base distribution of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BaseKind {
    /// `N(0, I)`.
    #[default]
    Normal,
    /// A learned diagonal Gaussian.
    DiagonalGaussian,
}

impl BaseKind {
    /// Builds the base distribution over events of shape `event_shape`, parameters under `p`.
    pub fn build(&self, p: &tch::nn::Path, event_shape: &[i64]) -> Box<dyn Distribution> {
        match self {
            BaseKind::Normal => Box::new(StandardNormal::new(event_shape)),
            BaseKind::DiagonalGaussian => Box::new(DiagonalGaussian::new(p, event_shape)),
        }
    }
}

/// The architecture of a vector i-ResNet flow.
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
}

/// Training settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub steps: u64,
    pub batch_size: i64,
    /// Checkpoint every this many steps (and at the end).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Append a line to `metrics.jsonl` every this many steps.
    #[serde(default = "default_log_every")]
    pub log_every: u64,
    /// The log-det estimator used for the training loss.
    #[serde(default)]
    pub logdet: LogDetEstimator,
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
}

fn exact() -> LogDetEstimator {
    LogDetEstimator::Exact
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            logdet: LogDetEstimator::Exact,
            inverse: FixedPointConfig::default(),
        }
    }
}

/// A whole run: what `genflow train` reads and stores beside its checkpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Seed of every random draw (weights, data, probes).
    #[serde(default)]
    pub seed: u64,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
    #[serde(default)]
    pub eval: EvalConfig,
    #[serde(default)]
    pub optim: OptimConfig,
}

impl RunConfig {
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
        self.model
            .spectral
            .validate()
            .map_err(|e| Error::config(format!("model.spectral: {e}")))?;
        self.train.logdet.validate()?;
        self.eval.logdet.validate()?;
        let positive = [
            ("model.blocks", self.model.blocks as i64),
            ("train.steps", self.train.steps as i64),
            ("train.batch_size", self.train.batch_size),
            ("train.checkpoint_every", self.train.checkpoint_every as i64),
            ("train.log_every", self.train.log_every as i64),
            ("data.test_size", self.data.test_size as i64),
        ];
        for (key, v) in positive {
            if v <= 0 {
                return Err(Error::config(format!("{key} must be positive, got {v}")));
            }
        }
        if let Some(w) = self.model.hidden.iter().find(|&&w| w <= 0) {
            return Err(Error::config(format!(
                "model.hidden widths must be positive, got {w}"
            )));
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
