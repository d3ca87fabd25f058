//! `genflow bench` as a cargo bench target, for `benches/compare` and for
//! `cargo bench --bench genflow -- --workload block-step` (same flags as the CLI subcommand).
use clap::Parser;

#[derive(Parser)]
#[command(about = "genflow's i-ResNet benchmarks (same flags as `genflow bench`)")]
struct Cli {
    #[command(flatten)]
    compute: genflow::device::ComputeArgs,
    #[command(flatten)]
    args: genflow::bench::BenchArgs,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = genflow::bench::run_cli(&cli.args, &cli.compute) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
