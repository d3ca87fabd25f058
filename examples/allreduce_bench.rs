//! All-reduce bandwidth of genflow's Gloo process group on N local ranks
//! (`genflow::distributed::bench::allreduce_bandwidth`).
//!
//! ```text
//! scripts/with-libtorch cargo run --release --example allreduce_bench -- \
//!     [--nproc 2] [--sizes 1,10,100] [--rounds 20] [--json out.json]
//! ```
//!
//! Started without `RANK` in its environment, it launches `--nproc` copies of itself with
//! `genflow::distributed::launch::launch_local` (like `torchrun --standalone`); each copy joins
//! the group, and rank 0 prints the table (and writes the JSON that `benches/allreduce-compare`
//! reads). Under `torchrun` or a cluster launcher it runs as one rank of theirs.
use std::time::Duration;

use genflow::distributed::{bench, launch, GroupConfig, ProcessGroup};
use genflow::{Error, Result};

struct Args {
    nproc: usize,
    sizes: Vec<f64>,
    rounds: usize,
    json: Option<String>,
}

fn parse(raw: &[String]) -> Result<Args> {
    let mut a = Args {
        nproc: 2,
        sizes: vec![1.0, 10.0, 100.0],
        rounds: 20,
        json: None,
    };
    let mut it = raw.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| Error::config(format!("{flag} needs a value")))
        };
        let bad = |v: &str| Error::config(format!("{flag} {v:?} is not valid"));
        match flag.as_str() {
            "--nproc" => {
                let v = value()?;
                a.nproc = v.parse().map_err(|_| bad(&v))?;
            }
            "--rounds" => {
                let v = value()?;
                a.rounds = v.parse().map_err(|_| bad(&v))?;
            }
            "--sizes" => {
                let v = value()?;
                a.sizes = v
                    .split(',')
                    .map(|s| s.trim().parse::<f64>())
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|_| bad(&v))?;
            }
            "--json" => a.json = Some(value()?),
            other => {
                return Err(Error::config(format!(
                    "unknown argument {other:?}; usage: allreduce_bench [--nproc N] [--sizes 1,10,100] [--rounds R] [--json PATH]"
                )))
            }
        }
    }
    Ok(a)
}

fn run() -> Result<i32> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let args = parse(&raw)?;
    if GroupConfig::from_env_if_set()?.is_none() {
        let me = std::env::current_exe()?;
        let status = launch::launch_local(args.nproc, me, &raw)?;
        return Ok(status.code().unwrap_or(1));
    }
    let pg = ProcessGroup::from_env(Duration::from_secs(120))?;
    let threads = tch::get_num_threads();
    let rows = bench::allreduce_bandwidth(&pg, &args.sizes, args.rounds)?;
    if pg.is_main() {
        println!(
            "genflow all-reduce (Gloo, {} ranks, f32 sum, {} rounds after {} warm-up; MB = 10^6 bytes)",
            pg.world_size(),
            args.rounds,
            bench::WARMUP
        );
        println!("| size MB | median ms | min ms | algbw GB/s | busbw GB/s |");
        println!("|---|---|---|---|---|");
        for r in &rows {
            println!(
                "| {} | {:.2} | {:.2} | {:.3} | {:.3} |",
                r.mb,
                r.median_s * 1e3,
                r.min_s * 1e3,
                r.algbw_gb_s,
                r.busbw_gb_s
            );
        }
        if let Some(path) = &args.json {
            let doc = serde_json::json!({
                "impl": "genflow",
                "backend": "gloo",
                "world_size": pg.world_size(),
                "threads": threads,
                "rows": rows,
            });
            std::fs::write(path, doc.to_string()).map_err(|e| Error::file(path, e.to_string()))?;
        }
    }
    Ok(0)
}

fn main() {
    match run() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
