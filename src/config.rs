//! Run-level configuration, the presets shipped in the binary, and reading configuration
//! documents (TOML files, presets or a checkpoint's stored config, with `--set key=value`
//! overrides) with errors that say where.
//!
//! A configuration document holds the run-level settings ([`RunConfig`]: `seed`, `device`,
//! `dtype`, `[train]`, `[optim]`) and the task's own tables (`task = "..."`, `[data]`, `[model]`,
//! `[eval]`, ...), which the task registry ([`crate::tasks`]) reads. Errors in a document name the
//! file, line and column of the offending key (or the `--set` that set it) and what was expected:
//!
//! ```
//! use genflow::config::{ConfigDocument, RunConfig};
//! let doc = ConfigDocument::parse("run.toml", "seed = 1\n[train]\nsteps = \"many\"\nbatch_size = 8\n")?;
//! let err = doc.decode::<RunConfig>("", doc.table().clone().into()).unwrap_err().to_string();
//! assert!(err.contains("run.toml:3:1") && err.contains("train.steps"), "{err}");
//! # Ok::<(), genflow::Error>(())
//! ```

use crate::optim::OptimConfig;
use crate::train::TrainConfig;
use crate::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::Path;

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
    Preset {
        name: "gan-toy",
        summary: "GAN of MLPs on 8gaussians, alternating update (or --set train.update=\"single-loss\")",
        toml: include_str!("../presets/gan-toy.toml"),
    },
    Preset {
        name: "gan-mnist",
        summary: "DCGAN on MNIST, alternating update, non-saturating loss, Adam; 3 epochs",
        toml: include_str!("../presets/gan-mnist.toml"),
    },
    Preset {
        name: "gan-mnist-single-loss",
        summary: "gan-mnist with the single-loss update (one loss, one backward, one step)",
        toml: include_str!("../presets/gan-mnist-single-loss.toml"),
    },
    Preset {
        name: "ogan-mnist",
        summary: "O-GAN on MNIST: the discriminator encodes (rho, reconstructions, interpolations)",
        toml: include_str!("../presets/ogan-mnist.toml"),
    },
    Preset {
        name: "ogan-fashion-mnist",
        summary: "O-GAN on Fashion-MNIST, as ogan-mnist",
        toml: include_str!("../presets/ogan-fashion-mnist.toml"),
    },
    Preset {
        name: "ogan-celeba-paper",
        summary: "the O-GAN reference's 128x128 model and settings, for GPUs and a folder of images (set data.folder)",
        toml: include_str!("../presets/ogan-celeba-paper.toml"),
    },
    Preset {
        name: "features-mnist",
        summary: "the feature network of the sample-quality metrics on MNIST (small CNN, 128 features)",
        toml: include_str!("../presets/features-mnist.toml"),
    },
    Preset {
        name: "features-fashion-mnist",
        summary: "the feature network of the sample-quality metrics on Fashion-MNIST",
        toml: include_str!("../presets/features-fashion-mnist.toml"),
    },
    Preset {
        name: "glann-mnist",
        summary: "GLANN (GLO + IMLE) on MNIST, official networks, 13 min on one CPU core (FD 30.0)",
        toml: include_str!("../presets/glann-mnist.toml"),
    },
    Preset {
        name: "glann-fashion-mnist",
        summary: "GLANN (GLO + IMLE) on Fashion-MNIST, official networks, as glann-mnist (FD 37.8)",
        toml: include_str!("../presets/glann-fashion-mnist.toml"),
    },
    Preset {
        name: "glann-paper",
        summary: "GLANN at the paper's CIFAR-10 settings (500 GLO epochs, 50 IMLE rounds), for GPUs",
        toml: include_str!("../presets/glann-paper.toml"),
    },
];

/// The settings every run has, whatever its task: the seed of every random draw, the device, the
/// floating-point type, the training loop (`[train]`) and the optimiser (`[optim]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Seed of every random draw (weights, data order, probes, samples).
    #[serde(default)]
    pub seed: u64,
    /// `auto`, `cpu`, `cuda` or `cuda:N`; the `--device` flag overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The floating-point type of the model's weights and of its training and evaluation:
    /// `dtype = "float32"` (the default) or `"float64"` (slower; for exact comparisons).
    #[serde(default, skip_serializing_if = "Dtype::is_default")]
    pub dtype: Dtype,
    pub train: TrainConfig,
    #[serde(default)]
    pub optim: OptimConfig,
}

impl RunConfig {
    /// The top-level keys that belong to the run rather than to its task.
    pub const KEYS: [&'static str; 5] = ["seed", "device", "dtype", "train", "optim"];

    /// Checks the training and optimiser settings and the device name.
    pub fn validate(&self) -> Result<()> {
        self.train.validate()?;
        self.optim.validate()?;
        if let Some(device) = &self.device {
            crate::device::parse(device)?;
        }
        Ok(())
    }
}

/// The floating-point type a run's model computes in (`dtype = "..."`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dtype {
    /// 32-bit floats (`"float32"`).
    #[default]
    #[serde(rename = "float32")]
    Float32,
    /// 64-bit floats (`"float64"`).
    #[serde(rename = "float64")]
    Float64,
}

impl Dtype {
    /// The libtorch kind.
    pub fn kind(self) -> tch::Kind {
        match self {
            Dtype::Float32 => tch::Kind::Float,
            Dtype::Float64 => tch::Kind::Double,
        }
    }

    fn is_default(&self) -> bool {
        *self == Dtype::default()
    }
}

/// A configuration document: TOML as read from a preset, a file or a checkpoint, with
/// `--set key=value` overrides applied. It remembers the text and the overrides so that errors
/// can say where the offending value came from.
#[derive(Debug, Clone)]
pub struct ConfigDocument {
    origin: String,
    text: String,
    table: toml::Table,
    overrides: Vec<(String, String)>,
}

impl ConfigDocument {
    /// A preset name or a TOML file path, with `key=value` overrides applied (dotted keys, values
    /// parsed as TOML and otherwise taken as strings).
    pub fn load(name_or_path: &str, overrides: &[String]) -> Result<Self> {
        let doc = match PRESETS.iter().find(|p| p.name == name_or_path) {
            Some(preset) => Self::parse(&format!("preset {}", preset.name), preset.toml)?,
            None => {
                let path = Path::new(name_or_path);
                if !path.is_file() {
                    let names: Vec<_> = PRESETS.iter().map(|p| p.name).collect();
                    return Err(Error::config(format!(
                        "'{name_or_path}' is neither a preset ({}) nor an existing TOML file",
                        names.join(", ")
                    )));
                }
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::file(path, format!("cannot read the configuration: {e}"))
                })?;
                Self::parse(name_or_path, &text)?
            }
        };
        doc.with_overrides(overrides)
    }

    /// Parses TOML `text`; `origin` names it in errors (a path, `preset NAME`, ...).
    pub fn parse(origin: &str, text: &str) -> Result<Self> {
        let table = toml::from_str::<toml::Table>(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| position(text, s.start))
                .map(|(line, col)| format!(":{line}:{col}"))
                .unwrap_or_default();
            Error::config(format!("{origin}{at}: {}", one_line(e.message())))
        })?;
        Ok(ConfigDocument {
            origin: origin.to_string(),
            text: text.to_string(),
            table,
            overrides: Vec::new(),
        })
    }

    /// The document with `key=value` overrides applied in order.
    pub fn with_overrides(mut self, overrides: &[String]) -> Result<Self> {
        for item in overrides {
            let (key, raw) = item
                .split_once('=')
                .ok_or_else(|| Error::config(format!("--set expects key=value, got '{item}'")))?;
            let key = key.trim().to_string();
            set_dotted(&mut self.table, &key, parse_value(raw))
                .map_err(|e| Error::config(format!("--set {item}: {e}")))?;
            self.overrides.push((key, raw.to_string()));
        }
        Ok(self)
    }

    /// The document's table (overrides applied).
    pub fn table(&self) -> &toml::Table {
        &self.table
    }

    /// Where the document came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Deserialises `value`, found at the dotted key path `prefix` of this document (`""` for the
    /// root), into `T`. An error names the key path and says where it was set: the file, line and
    /// column, or the `--set` that set it.
    pub fn decode<T: DeserializeOwned>(&self, prefix: &str, value: toml::Value) -> Result<T> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let inner = one_line(e.inner().message());
            let segments: Vec<String> = e
                .path()
                .iter()
                .filter_map(|seg| match seg {
                    serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                    serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                    _ => None,
                })
                .collect();
            let mut path: Vec<String> = prefix
                .split('.')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            path.extend(segments);
            self.located_error(&path, &inner)
        })
    }

    /// An error about the key at `path`, located as [`ConfigDocument::decode`] does.
    pub fn located_error(&self, path: &[String], message: &str) -> Error {
        let dotted = path.join(".");
        let set_by = self.overrides.iter().rev().find(|(key, _)| {
            let key_parts: Vec<&str> = key.split('.').collect();
            key_parts.len() <= path.len() && key_parts.iter().zip(path).all(|(a, b)| a == b)
        });
        if let Some((key, raw)) = set_by {
            return Error::config(format!("--set {key}={raw}: {dotted}: {message}"));
        }
        let at = locate(&self.text, path)
            .map(|offset| {
                let (line, col) = position(&self.text, offset);
                format!(":{line}:{col}")
            })
            .unwrap_or_default();
        let key = if dotted.is_empty() {
            String::new()
        } else {
            format!(" {dotted}:")
        };
        Error::config(format!("{}{at}:{key} {message}", self.origin))
    }
}

/// A `--set` value: TOML when it parses as a TOML value, else the raw text as a string (so that
/// `--set data.density=checkerboard` needs no quotes).
fn parse_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// Sets `a.b.c = value` in a TOML table, creating tables on the way.
fn set_dotted(
    root: &mut toml::Table,
    key: &str,
    value: toml::Value,
) -> std::result::Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    let (last, parents) = parts
        .split_last()
        .filter(|(last, _)| !last.is_empty())
        .ok_or_else(|| "empty key".to_string())?;
    let mut table = root;
    for part in parents {
        table = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .ok_or_else(|| format!("'{part}' is not a table"))?;
    }
    table.insert(last.to_string(), value);
    Ok(())
}

/// The byte offset in `text` of the key at `path`, or of its innermost ancestor that the text
/// holds (a key set only by an override has none), from the spans of a lossless parse.
fn locate(text: &str, path: &[String]) -> Option<usize> {
    use toml::de::DeValue;
    let parsed = toml::de::DeTable::parse(text).ok()?;
    let (first, rest) = path.split_first()?;
    let (key, mut value) = parsed
        .get_ref()
        .iter()
        .find(|(k, _)| k.get_ref() == first)?;
    let mut found = key.span().start;
    for segment in rest {
        let next = match value.get_ref() {
            DeValue::Table(t) => t
                .iter()
                .find(|(k, _)| k.get_ref() == segment)
                .map(|(k, v)| (k.span().start, v)),
            DeValue::Array(a) => segment
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get(i))
                .map(|v| (v.span().start, v)),
            _ => None,
        };
        let Some((start, v)) = next else { break };
        found = start;
        value = v;
    }
    Some(found)
}

/// 1-based `(line, column)` of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// A message folded onto one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}
