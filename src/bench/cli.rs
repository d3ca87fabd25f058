//! The flags of `genflow bench`, turned into a validated [`BenchConfig`] before anything runs.
//!
//! The CLI flattens [`BenchArgs`] into its `bench` subcommand and calls [`run_cli`].

use super::plot::{plot_scaling, ScalingTable};
use super::{run, BenchConfig, BlockShape, GlannShape, Workload};
use crate::device::ComputeArgs;
use crate::linalg::logdet::Backend;
use crate::{Error, Result};
use std::path::PathBuf;

/// `genflow bench [--json] [--workload NAME] ...` (with the global `--device` and `--threads`)
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Print one line of JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Run only this workload (repeatable): block-step, block-forward, block-inverse,
    /// logdet-terms, toy-step, mnist-step, matmul-1024, glo-step, imle-search. Default: all.
    #[arg(long = "workload", value_name = "NAME")]
    pub workloads: Vec<String>,
    /// Jacobian products of the block log-det: tangent (first-order) or vjp (double backward).
    #[arg(long, default_value = "tangent")]
    pub backend: String,
    /// Hidden channels of the block.
    #[arg(long, default_value_t = BlockShape::default().hidden)]
    pub hidden: i64,
    /// Series terms of the block log-det.
    #[arg(long, default_value_t = BlockShape::default().terms)]
    pub terms: usize,
    /// Batch size of the block workloads.
    #[arg(long, default_value_t = BlockShape::default().batch)]
    pub batch: i64,
    /// Codes of glo-step's table and imle-search's queries.
    #[arg(long, default_value_t = GlannShape::default().codes)]
    pub codes: i64,
    /// Candidates of imle-search.
    #[arg(long, default_value_t = GlannShape::default().candidates)]
    pub candidates: i64,
    /// Untimed runs before the samples.
    #[arg(long, default_value_t = BenchConfig::default().warmup)]
    pub warmup: usize,
    /// Timed runs per workload.
    #[arg(long, default_value_t = BenchConfig::default().samples)]
    pub samples: usize,
    /// Keep the C allocator's defaults instead of reusing freed memory (for comparisons).
    #[arg(long)]
    pub default_malloc: bool,
    /// Instead of benchmarking, draw the scaling table written by `benches/compare --scaling`
    /// as a PNG (see --out).
    #[arg(long, value_name = "JSON")]
    pub plot_scaling: Option<PathBuf>,
    /// Where --plot-scaling writes its PNG (default: the JSON path with .png).
    #[arg(long, value_name = "PNG")]
    pub out: Option<PathBuf>,
}

fn parse_backend(s: &str) -> Result<Backend> {
    match s {
        "tangent" => Ok(Backend::Tangent),
        "vjp" => Ok(Backend::Vjp),
        _ => Err(Error::config(format!(
            "unknown backend '{s}'; use tangent or vjp"
        ))),
    }
}

impl BenchArgs {
    /// The validated configuration these flags describe, on the device and with the threads of
    /// the global flags.
    pub fn to_config(&self, compute: &ComputeArgs) -> Result<BenchConfig> {
        let defaults = BenchConfig::default();
        let workloads = if self.workloads.is_empty() {
            defaults.workloads.clone()
        } else {
            self.workloads
                .iter()
                .map(|w| w.parse())
                .collect::<Result<Vec<Workload>>>()?
        };
        let config = BenchConfig {
            workloads,
            device: compute.device_or_auto()?,
            backend: parse_backend(&self.backend)?,
            block: BlockShape {
                hidden: self.hidden,
                terms: self.terms,
                batch: self.batch,
                ..BlockShape::default()
            },
            glann: GlannShape {
                codes: self.codes,
                candidates: self.candidates,
                ..GlannShape::default()
            },
            warmup: self.warmup,
            samples: self.samples,
            threads: compute.threads.unwrap_or(0),
            reuse_memory: !self.default_malloc,
            ..defaults
        };
        config.validate()?;
        Ok(config)
    }
}

/// Runs `genflow bench` with parsed flags: prints the table (or JSON), or draws the scaling plot.
pub fn run_cli(args: &BenchArgs, compute: &ComputeArgs) -> Result<()> {
    if let Some(json) = &args.plot_scaling {
        let out = args
            .out
            .clone()
            .unwrap_or_else(|| json.with_extension("png"));
        plot_scaling(&ScalingTable::load(json)?, &out)?;
        println!("wrote {}", out.display());
        return Ok(());
    }
    let report = run(&args.to_config(compute)?)?;
    if args.json {
        println!("{}", report.to_json()?);
    } else {
        print!("{report}");
    }
    Ok(())
}
