//! Bad input of every kind a user can give gets a one-line error naming what was wrong (never a
//! panic, never libtorch's C++ text, never an allocation abort), and nothing of an earlier run is
//! overwritten. One row per kind: the command, and words its error must contain.
mod common;

use std::path::Path;
use std::process::Command;

/// A trained toy run, a trained digits density run and their data, made once.
struct World {
    tmp: tempfile::TempDir,
}

impl World {
    fn path(&self, name: &str) -> String {
        self.tmp.path().join(name).display().to_string()
    }
}

fn genflow(args: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_genflow"))
        .env("OMP_NUM_THREADS", "1")
        .args(["--device", "cpu", "--threads", "1"])
        .args(args)
        .output()
        .unwrap()
}

fn setup() -> World {
    let world = World {
        tmp: tempfile::tempdir().unwrap(),
    };
    let dir = world.tmp.path();
    common::write_digits(dir);
    let run = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let out = genflow(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "train",
        "--config",
        "iresnet-toy",
        "--out",
        &world.path("toy"),
        "--set",
        "model.blocks=2",
        "--set",
        "model.hidden=[8]",
        "--set",
        "train.steps=3",
        "--set",
        "train.batch_size=16",
        "--set",
        "data.test_size=32",
    ]);
    run(&[
        "train",
        "--config",
        "iresnet-digits",
        "--out",
        &world.path("img"),
        "--set",
        &format!("data.dir=\"{}\"", dir.display()),
        "--set",
        "model.scales=[1, 1]",
        "--set",
        "model.hidden=8",
        "--set",
        "train.steps=2",
        "--set",
        "train.batch_size=16",
    ]);
    std::fs::write(dir.join("points3.csv"), "a,b,c\n1,2,3\n").unwrap();
    std::fs::write(dir.join("words.csv"), "x,y\n1,2\nthree,4\n").unwrap();
    std::fs::write(dir.join("nan.csv"), "x,y\n1,NaN\n").unwrap();
    std::fs::write(dir.join("bad.toml"), "task = \"toy-density\"\n[model\n").unwrap();
    std::fs::write(
        dir.join("corrupt-idx3-ubyte"),
        [0u8, 0, 8, 3, 0, 0, 0, 9, 0, 0, 0, 28],
    )
    .unwrap();
    image::RgbImage::new(13, 7)
        .save(dir.join("odd.png"))
        .unwrap();
    std::fs::write(dir.join("not.png"), b"not a png").unwrap();
    std::fs::create_dir_all(dir.join("empty/digits")).unwrap();
    std::fs::write(dir.join("empty/digits/digits.csv.gz"), b"").unwrap();
    std::fs::create_dir_all(dir.join("short/digits")).unwrap();
    // 1500 training digits and no test digit: an empty test split
    {
        use std::io::Write;
        let file = std::fs::File::create(dir.join("short/digits/digits.csv.gz")).unwrap();
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        for i in 0..1500 {
            writeln!(gz, "{},{}", ["1"; 64].join(","), i % 10).unwrap();
        }
        gz.finish().unwrap();
    }
    world
}

/// `(kind, command, words the error contains)`; `{toy}`, `{img}`, `{tmp}`, `{data}` stand for the
/// toy run, the image run, the scratch folder and the data folder.
const KINDS: &[(&str, &str, &[&str])] = &[
    ("unknown key", "train --config iresnet-toy --out {tmp}/a --set model.colour=3", &["colour", "unknown field"]),
    ("wrong type", "train --config iresnet-toy --out {tmp}/a --set model.blocks=ten", &["model.blocks", "expected usize"]),
    ("c >= 1", "train --config iresnet-toy --out {tmp}/a --set model.spectral.coeff=1.2", &["0 < c < 1"]),
    ("zero steps", "train --config iresnet-toy --out {tmp}/a --set train.steps=0", &["train.steps must be positive"]),
    ("zero batch", "train --config iresnet-toy --out {tmp}/a --set train.batch_size=0", &["train.batch_size"]),
    ("absurd batch", "train --config iresnet-toy --out {tmp}/a --set train.batch_size=6400000000", &["train.batch_size", "beyond"]),
    ("absurd test set", "train --config iresnet-toy --out {tmp}/a --set data.test_size=99999999999", &["data.test_size", "beyond"]),
    ("absurd width", "train --config iresnet-toy --out {tmp}/a --set model.hidden=[100000000]", &["model.hidden", "beyond"]),
    ("absurd image", "train --config iresnet-digits --out {tmp}/a --set model.in_shape=[1, 100000, 8]", &["model.in_shape", "beyond"]),
    ("negative learning rate", "train --config iresnet-toy --out {tmp}/a --set optim.lr=-1", &["lr"]),
    ("EMA decay out of range", "train --config iresnet-toy --out {tmp}/a --set train.ema_decay=1.5", &["ema_decay"]),
    ("negative time budget", "train --config iresnet-toy --out {tmp}/a --set train.max_minutes=-3", &["max_minutes"]),
    ("unknown activation", "train --config iresnet-toy --out {tmp}/a --set model.activation=\"tanh\"", &["unknown variant `tanh`"]),
    ("unknown layer", "train --config iresnet-toy --out {tmp}/a --set model.mixing=\"householder\"", &["householder"]),
    ("unknown task", "train --config iresnet-toy --out {tmp}/a --set task=\"vae\"", &["unknown task 'vae'"]),
    ("image size vs scales", "train --config iresnet-digits --out {tmp}/a --set model.in_shape=[1, 6, 6] --set model.scales=[1, 1, 1]", &["odd size"]),
    ("model shape vs data", "train --config iresnet-digits --out {tmp}/a --set data.dir=\"{data}\" --set model.in_shape=[1, 16, 16]", &["model takes [1, 16, 16]"]),
    ("set without value", "train --config iresnet-toy --out {tmp}/a --set model.blocks", &["--set expects key=value"]),
    ("unknown preset", "train --config iresnet-tyo --out {tmp}/a", &["neither a preset"]),
    ("TOML syntax", "train --config {data}/bad.toml --out {tmp}/a", &["bad.toml:2:"]),
    ("unknown device", "train --config iresnet-toy --out {tmp}/a --device tpu", &["unknown device"]),
    ("zero threads", "presets --threads 0", &["--threads"]),
    ("data not installed", "train --config iresnet-mnist --out {tmp}/a --set data.dir=\"{tmp}/nowhere\"", &["install"]),
    ("empty data file", "train --config iresnet-digits --out {tmp}/a --set data.dir=\"{data}/empty\"", &["digits.csv.gz"]),
    ("empty test split", "train --config iresnet-digits --out {tmp}/a --set data.dir=\"{data}/short\"", &["test split", "empty"]),
    ("existing run", "train --config iresnet-toy --out {toy}", &["already holds a run"]),
    ("resume without checkpoint", "train --out {tmp}/nothing --resume", &["holds no checkpoint"]),
    ("resume another model", "train --out {toy} --resume --set model.blocks=5", &["model.blocks"]),
    ("resume a finished run", "train --out {toy} --resume", &["already finished"]),
    ("eval of no run", "eval --run {tmp}/nothing", &["not found"]),
    ("eval with a model override", "eval --run {toy} --set model.blocks=4", &["model.blocks"]),
    ("negative eval samples", "eval --run {toy} --samples -5", &["--samples"]),
    ("zero samples", "sample --run {toy} -n 0 --out {tmp}/s.csv", &["at least 1"]),
    ("negative samples", "sample --run {toy} -n -1 --out {tmp}/s.csv", &["at least 1"]),
    ("absurd samples", "sample --run {toy} -n 99999999999 --out {tmp}/s.csv", &["beyond"]),
    ("negative temperature", "sample --run {toy} --temperature -1 --out {tmp}/s.csv", &["temperature"]),
    ("unknown output format", "sample --run {toy} --out {tmp}/s.txt", &["s.txt", ".csv"]),
    ("CSV of other points", "log-prob --run {toy} --in {data}/points3.csv --out {tmp}/lp.csv", &["3 values", "points of 2"]),
    ("CSV with words", "log-prob --run {toy} --in {data}/words.csv --out {tmp}/lp.csv", &["line 3", "not a number"]),
    ("CSV with NaN", "log-prob --run {toy} --in {data}/nan.csv --out {tmp}/lp.csv", &["not finite"]),
    ("missing input", "encode --run {toy} --in {tmp}/none.csv --out {tmp}/z.csv", &["none.csv"]),
    ("PNG of another size", "encode --run {img} --in {data}/odd.png --out {tmp}/z.csv", &["13x7", "neither"]),
    ("not a PNG", "encode --run {img} --in {data}/not.png --out {tmp}/z.csv", &["not.png", "decode"]),
    ("corrupt IDX", "encode --run {img} --in {data}/corrupt-idx3-ubyte --out {tmp}/z.csv", &["corrupt-idx3-ubyte", "truncated"]),
    ("latents of another shape", "decode --run {toy} --in {data}/points3.csv --out {tmp}/x.csv", &["3 values"]),
    ("metrics against a bad reference", "metrics --images {data}/odd.png --against digits", &["DATASET:SPLIT"]),
    ("unknown flag", "eval --run {toy} --jsn", &["--jsn"]),
    ("unknown subcommand", "trian --config iresnet-toy", &["trian"]),
];

#[test]
fn every_kind_of_bad_input_is_a_one_line_error_and_overwrites_nothing() {
    let world = setup();
    let scratch = world.path("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let fingerprint = |run: &str| -> Vec<Vec<u8>> {
        ["checkpoint.safetensors", "metrics.jsonl", "config.toml"]
            .iter()
            .map(|f| std::fs::read(Path::new(run).join(f)).unwrap())
            .collect()
    };
    let (toy_before, img_before) = (
        fingerprint(&world.path("toy")),
        fingerprint(&world.path("img")),
    );
    let mut table = Vec::new();
    for (kind, command, words) in KINDS {
        let line = command
            .replace("{toy}", &world.path("toy"))
            .replace("{img}", &world.path("img"))
            .replace("{data}", &world.tmp.path().display().to_string())
            .replace("{tmp}", &scratch);
        let args: Vec<String> = shell_words(&line);
        let out = genflow(&args);
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        // 1 for bad input, 2 for flags the command line does not take (a panic would be 101)
        let code = out.status.code();
        assert!(
            matches!(code, Some(1 | 2)),
            "{kind}: exit status {code:?}: {err}"
        );
        assert_eq!(
            err.lines().count(),
            1,
            "{kind}: error should be one line: {err}"
        );
        assert!(
            !err.contains("panicked") && !err.contains("Exception raised"),
            "{kind}: {err}"
        );
        for word in *words {
            assert!(err.contains(word), "{kind}: '{word}' not in: {err}");
        }
        table.push(format!("| {kind} | `genflow {command}` | {err} |"));
    }
    // nothing failing wrote anything, and the earlier runs are untouched
    for name in ["a", "nothing", "s.csv", "s.txt", "lp.csv", "z.csv", "x.csv"] {
        assert!(
            !Path::new(&scratch).join(name).exists(),
            "{name} was written"
        );
    }
    assert!(
        fingerprint(&world.path("toy")) == toy_before,
        "the toy run changed"
    );
    assert!(
        fingerprint(&world.path("img")) == img_before,
        "the image run changed"
    );
    eprintln!("{} kinds of bad input:\n{}", KINDS.len(), table.join("\n"));
}

/// Splits a command line at spaces, keeping `[..]` and `"..."` groups whole.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut depth = 0;
    for c in line.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ => {}
        }
        if c == ' ' && depth == 0 {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
        } else {
            current.push(c);
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}
