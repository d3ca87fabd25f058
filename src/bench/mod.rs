//! Reproducible performance measurements of the i-ResNet core (`genflow bench`).
//!
//! Each [`Workload`] runs a fixed computation after warm-up and reports the median, minimum and
//! maximum wall-clock milliseconds of its samples, the median process CPU time, and the process's
//! peak memory:
//!
//! | workload | what is timed |
//! |---|---|
//! | `block-step` | one SN conv i-ResNet block (`phi -> conv3x3 -> phi -> conv1x1 -> phi -> conv3x3`, ELU, c = 0.9, 5 power iterations), batch 64 of 16x28x28, hidden 64, 5-term series log-det: forward, NLL, backward, Adam step |
//! | `block-forward` | the same block in evaluation mode: `y` and the 5-term log-det, no gradients |
//! | `block-inverse` | Banach fixed-point inversion of the block to `atol = rtol = 1e-5` |
//! | `logdet-terms` | cost of one more series term in a training step, tangent and VJP products (`logdet-term-tangent`, `logdet-term-vjp`) |
//! | `toy-step` | the `iresnet-toy` preset's model (10 x [ActNorm, MLP 2-64-64-64-2 block], LipSwish, 1 power iteration), batch 500, exact log-det: a training step |
//! | `mnist-step` | a training step of the `iresnet-mnist` preset's model ([`workloads::mnist_model`]), batch 64, Russian-roulette log-det |
//! | `gan-step` | one full update of the `gan-mnist` preset (DCGAN on 1x28x28, batch 64 of uniform images in [-1, 1]): the alternating update, a discriminator step and a generator step of one Adam optimiser ([`crate::gan::update`]) |
//! | `ogan-step` | one full update of the `ogan-mnist` preset (O-GAN, the single-loss update of GAN-QP with the correlation term, RMSprop) |
//! | `matmul-1024` | a 1024 x 1024 matmul: the GFLOP/s ceiling of the same libtorch on this machine |
//! | `glo-step` | a GLO step of the `glann-mnist` preset: batch 128, a table of 60000 codes, Laplacian loss, backward, Adam over generator and codes, projection ([`glann`]) |
//! | `imle-search` | IMLE's exact nearest-neighbour search of 60000 codes among 600000 candidates, 64 dimensions ([`glann`]) |
//!
//! `benches/pytorch/iresnet_bench.py` runs the i-ResNet workloads in PyTorch with the official
//! i-ResNet estimator (double backward) and with tangent passes, `benches/pytorch/gan_bench.py` the
//! GAN workloads as a PyTorch training loop would (two optimisers for the alternating update),
//! `benches/pytorch/glann_bench.py` the GLANN ones, each printing the same JSON, and
//! `benches/compare` alternates both implementations in rounds and prints the ratio table.
//! [`run`] first applies [`reuse_freed_memory`] (unless [`BenchConfig::reuse_memory`] is off), as
//! the genflow CLI does at start-up.
//!
//! ```
//! use genflow::bench::{run, BenchConfig, Workload};
//! # fn main() -> genflow::Result<()> {
//! let config = BenchConfig { workloads: vec![Workload::BlockForward], ..BenchConfig::tiny() };
//! let report = run(&config)?;
//! assert_eq!(report.workloads[0].name, "block-forward");
//! assert!(report.workloads[0].median.unwrap() > 0.0);
//! # Ok(())
//! # }
//! ```
pub mod cli;
pub mod glann;
pub mod memory;
pub mod plot;
pub mod timing;
pub mod workloads;

use crate::flows::FixedPointConfig;
use crate::linalg::logdet::Backend;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use tch::Device;

pub use cli::{run_cli, BenchArgs};
pub use glann::GlannShape;
pub use memory::reuse_freed_memory;
pub use workloads::adam_step;

/// One fixed benchmark computation (see the module docs for what each one times).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `block-step`: a training step of the SN conv block.
    BlockStep,
    /// `block-forward`: `y` and the series log-det of the block, no gradients.
    BlockForward,
    /// `block-inverse`: fixed-point inversion of the block to tolerance.
    BlockInverse,
    /// `logdet-terms`: the cost of one series term, tangent and VJP.
    LogdetTerms,
    /// `toy-step`: a training step of the iresnet-toy model.
    ToyStep,
    /// `mnist-step`: a training step of the iresnet-mnist model.
    MnistStep,
    /// `gan-step`: one alternating update of the gan-mnist model.
    GanStep,
    /// `ogan-step`: one single-loss update of the ogan-mnist model.
    OganStep,
    /// `matmul-1024`: the matmul ceiling in GFLOP/s.
    Matmul,
    /// `glo-step`: a GLO training step of the glann-mnist model.
    GloStep,
    /// `imle-search`: IMLE's exact nearest-neighbour search.
    ImleSearch,
}

impl Workload {
    /// Every workload, in the order `genflow bench` runs them.
    pub const ALL: [Workload; 11] = [
        Workload::BlockStep,
        Workload::BlockForward,
        Workload::BlockInverse,
        Workload::LogdetTerms,
        Workload::ToyStep,
        Workload::MnistStep,
        Workload::GanStep,
        Workload::OganStep,
        Workload::Matmul,
        Workload::GloStep,
        Workload::ImleSearch,
    ];

    /// The command-line and JSON name.
    pub fn name(self) -> &'static str {
        match self {
            Workload::BlockStep => "block-step",
            Workload::BlockForward => "block-forward",
            Workload::BlockInverse => "block-inverse",
            Workload::LogdetTerms => "logdet-terms",
            Workload::ToyStep => "toy-step",
            Workload::MnistStep => "mnist-step",
            Workload::GanStep => "gan-step",
            Workload::OganStep => "ogan-step",
            Workload::Matmul => "matmul-1024",
            Workload::GloStep => "glo-step",
            Workload::ImleSearch => "imle-search",
        }
    }
}

impl FromStr for Workload {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Workload::ALL.iter().map(|w| w.name()).collect();
                Error::config(format!(
                    "unknown workload '{s}'; choose one of {}",
                    names.join(", ")
                ))
            })
    }
}

/// The i-ResNet conv block of the block workloads.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BlockShape {
    /// Images per batch.
    pub batch: i64,
    /// Input channels `C`.
    pub channels: i64,
    /// Height = width of the input.
    pub size: i64,
    /// Hidden channels `H` of the convs.
    pub hidden: i64,
    /// Series terms of the log-det estimate.
    pub terms: usize,
    /// Spectral-normalisation coefficient `c`.
    pub coeff: f64,
    /// Power iterations per training step.
    pub power_iter: usize,
}

impl Default for BlockShape {
    /// Batch 64 of 16x28x28, hidden 64, 5 terms, c = 0.9, 5 power iterations (the issue's config).
    fn default() -> Self {
        BlockShape {
            batch: 64,
            channels: 16,
            size: 28,
            hidden: 64,
            terms: 5,
            coeff: 0.9,
            power_iter: 5,
        }
    }
}

/// The iresnet-toy model of the `toy-step` workload.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ToyShape {
    /// Number of [ActNorm, i-ResNet block] pairs.
    pub blocks: usize,
    /// Width of the three hidden layers of each MLP.
    pub width: i64,
    /// Points per batch.
    pub batch: i64,
}

impl Default for ToyShape {
    /// 10 blocks of MLP 2-64-64-64-2, batch 500.
    fn default() -> Self {
        ToyShape {
            blocks: 10,
            width: 64,
            batch: 500,
        }
    }
}

/// What `genflow bench` runs and how.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchConfig {
    /// The workloads, in order.
    pub workloads: Vec<Workload>,
    /// Where tensors live (`cpu` or a CUDA device).
    pub device: Device,
    /// How the block workloads take Jacobian products for the log-det.
    pub backend: Backend,
    /// The block of the `block-*` and `logdet-terms` workloads.
    pub block: BlockShape,
    /// The model of `toy-step`.
    pub toy: ToyShape,
    /// Images per batch of `mnist-step`, `gan-step` and `ogan-step` (the presets' 64 by default).
    pub mnist_batch: i64,
    /// Tolerances of `block-inverse`.
    pub inverse: FixedPointConfig,
    /// Size of the square matmul workload.
    pub matmul_n: i64,
    /// Sizes of `glo-step` and `imle-search`.
    pub glann: GlannShape,
    /// Untimed runs before the samples.
    pub warmup: usize,
    /// Timed runs per workload.
    pub samples: usize,
    /// Intra-op threads (`tch::set_num_threads`); 0 keeps libtorch's default.
    pub threads: i32,
    /// Apply [`reuse_freed_memory`] before running (what the genflow CLI does at start-up).
    pub reuse_memory: bool,
    /// libtorch seed of the weights, inputs and probes.
    pub seed: i64,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            workloads: Workload::ALL.to_vec(),
            device: Device::Cpu,
            backend: Backend::Tangent,
            block: BlockShape::default(),
            toy: ToyShape::default(),
            mnist_batch: 64,
            inverse: FixedPointConfig::default(),
            matmul_n: 1024,
            glann: GlannShape::default(),
            warmup: 2,
            samples: 5,
            threads: 0,
            reuse_memory: true,
            seed: 0,
        }
    }
}

impl BenchConfig {
    /// Tiny sizes for tests and examples: every workload runs in well under a second.
    pub fn tiny() -> Self {
        BenchConfig {
            block: BlockShape {
                batch: 2,
                channels: 2,
                size: 4,
                hidden: 4,
                terms: 2,
                ..Default::default()
            },
            toy: ToyShape {
                blocks: 2,
                width: 8,
                batch: 16,
            },
            mnist_batch: 1,
            matmul_n: 32,
            glann: GlannShape {
                codes: 50,
                candidates: 300,
                batch: 4,
            },
            warmup: 1,
            samples: 2,
            ..Default::default()
        }
    }

    /// Checks sizes and counts, with a message saying what to change.
    pub fn validate(&self) -> Result<()> {
        let b = &self.block;
        let positive = [
            b.batch,
            b.channels,
            b.size,
            b.hidden,
            self.toy.width,
            self.toy.batch,
            self.mnist_batch,
            self.matmul_n,
            self.glann.codes,
            self.glann.candidates,
            self.glann.batch,
        ];
        if positive.iter().any(|&v| v < 1) || b.terms == 0 || self.toy.blocks == 0 {
            return Err(Error::config(format!(
                "bench sizes must be positive and terms >= 1: block {b:?}, toy {:?}, mnist batch {}, matmul {}, glann {:?}",
                self.toy, self.mnist_batch, self.matmul_n, self.glann
            )));
        }
        if self.samples == 0 {
            return Err(Error::config("bench needs --samples >= 1"));
        }
        if self.workloads.is_empty() {
            return Err(Error::config("no workload selected"));
        }
        if let Device::Cuda(i) = self.device {
            if !tch::Cuda::is_available() || i as i64 >= tch::Cuda::device_count() {
                return Err(Error::config(format!(
                    "--device cuda: CUDA device {i} is not available here; use --device cpu"
                )));
            }
        }
        crate::nn::SpectralConfig {
            coeff: b.coeff,
            n_power_iter: b.power_iter,
        }
        .validate()
    }
}

/// The result of one workload, as printed and as written to JSON (the layout shared with
/// `benches/pytorch/iresnet_bench.py`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadResult {
    /// The workload's name (`logdet-terms` reports `logdet-term-tangent` and `logdet-term-vjp`).
    pub name: String,
    /// Unit of `median`, `min`, `max` (milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Median wall-clock time of the samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub median: Option<f64>,
    /// Fastest sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Slowest sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Number of timed samples.
    #[serde(default)]
    pub samples: usize,
    /// Median process CPU milliseconds per sample (all threads), beside the wall-clock figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_median: Option<f64>,
    /// Peak RSS of the process after the workload, MiB (`null` on CUDA or without `/proc`).
    #[serde(default)]
    pub peak_rss_mb: Option<f64>,
    /// Growth of the peak RSS during the workload, MiB.
    #[serde(default)]
    pub rss_increase_mb: Option<f64>,
    /// Why the workload did not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Workload-specific numbers (iterations, GFLOP/s, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl WorkloadResult {
    /// A result from timed samples; the memory figures are filled in by [`run`].
    pub fn from_samples(name: &str, samples: &[timing::Sample]) -> Result<Self> {
        let wall: Vec<f64> = samples.iter().map(|s| s.wall_ms).collect();
        let cpu: Vec<f64> = samples.iter().map(|s| s.cpu_ms).collect();
        let s = timing::Stats::of(&wall)?;
        Ok(WorkloadResult {
            name: name.to_string(),
            unit: Some("ms".into()),
            median: Some(s.median),
            min: Some(s.min),
            max: Some(s.max),
            samples: samples.len(),
            cpu_median: timing::Stats::of(&cpu).ok().map(|c| c.median),
            peak_rss_mb: None,
            rss_increase_mb: None,
            skipped: None,
            extra: Default::default(),
        })
    }

    /// Adds a workload-specific number.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }
}

/// Everything one `genflow bench` run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// `"genflow"` (or `"pytorch"` in the reference script's output).
    pub implementation: String,
    /// How log-dets take Jacobian products: `"tangent"` or `"vjp"`.
    pub method: String,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// libtorch intra-op threads.
    pub threads: i32,
    /// The block configuration and sampling settings.
    pub config: serde_json::Value,
    /// One entry per result, in run order.
    pub workloads: Vec<WorkloadResult>,
}

impl BenchReport {
    /// The report as one line of JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| Error::config(format!("bench report to JSON: {e}")))
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} ({}), {} threads, device {}",
            self.implementation, self.method, self.threads, self.device
        )?;
        for w in &self.workloads {
            match (&w.skipped, w.median, w.min, w.max) {
                (Some(reason), ..) => writeln!(f, "  {:<22} skipped: {reason}", w.name)?,
                (None, Some(med), Some(min), Some(max)) => {
                    write!(
                        f,
                        "  {:<22} median {med:9.2} ms  min {min:9.2}  max {max:9.2}",
                        w.name
                    )?;
                    if let Some(cpu) = w.cpu_median {
                        write!(f, "  cpu {cpu:9.2}")?;
                    }
                    match w.peak_rss_mb {
                        Some(rss) => writeln!(f, "  peak RSS {rss:7.1} MB")?,
                        None => writeln!(f)?,
                    }
                }
                _ => writeln!(f, "  {:<22} (no timings)", w.name)?,
            }
        }
        Ok(())
    }
}

fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Runs the configured workloads in order and collects their results.
pub fn run(config: &BenchConfig) -> Result<BenchReport> {
    config.validate()?;
    let reuse_memory = config.reuse_memory && reuse_freed_memory();
    if config.threads > 0 {
        tch::set_num_threads(config.threads);
    }
    let mut results = Vec::new();
    for &workload in &config.workloads {
        let before = timing::peak_rss_mb();
        for mut r in workloads::run_workload(workload, config)? {
            if config.device == Device::Cpu && r.skipped.is_none() {
                r.peak_rss_mb = timing::peak_rss_mb();
                // the kernel updates VmHWM lazily: after pages were reclaimed, a read can come out
                // a little below an earlier one, so the growth is never taken below 0
                r.rss_increase_mb = r
                    .peak_rss_mb
                    .zip(before)
                    .map(|(after, b)| (after - b).max(0.0));
            }
            results.push(r);
        }
    }
    let b = &config.block;
    let config_json = serde_json::json!({
        "batch": b.batch, "channels": b.channels, "size": b.size, "hidden": b.hidden,
        "terms": b.terms, "coeff": b.coeff, "power_iter": b.power_iter,
        "warmup": config.warmup, "samples": config.samples, "reuse_freed_memory": reuse_memory,
        "glann": config.glann,
    });
    Ok(BenchReport {
        implementation: "genflow".into(),
        method: match config.backend {
            Backend::Tangent => "tangent".into(),
            Backend::Vjp => "vjp".into(),
        },
        device: device_name(config.device),
        threads: tch::get_num_threads(),
        config: config_json,
        workloads: results,
    })
}
