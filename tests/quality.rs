//! Sample quality through the command line: `genflow eval` of an image generator adds FD, KID,
//! precision and recall on a feature network it trains once per data set and names; `genflow
//! metrics` compares one's own images with a data set; the report pages hold the metrics and
//! pictures, and load in a real browser (headless Chromium, when installed: `.ci/run` installs it).
mod common;

use common::{genflow as run, ok};

use genflow::data::tensor_file;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn json(out: Output) -> serde_json::Value {
    serde_json::from_str(&ok(&out)).unwrap()
}

/// A tiny image density run on the stripe digits in `tmp/name`.
fn density_run(tmp: &Path, name: &str, steps: &str) -> String {
    let dir = tmp.join(name).display().to_string();
    let data = format!("data.dir=\"{}\"", tmp.display());
    ok(&run(&[
        "train",
        "--config",
        "iresnet-digits",
        "--out",
        &dir,
        "--set",
        &data,
        "--set",
        "model.scales=[1, 1]",
        "--set",
        "model.hidden=8",
        "--set",
        steps,
        "--set",
        "train.batch_size=32",
    ]));
    dir
}

/// The headless browser, if this machine has one.
fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .map(|name| Path::new("/usr/bin").join(name))
        .find(|p| p.exists())
}

/// Opens `page` in headless Chromium, lets its scripts run, and returns the DOM; also writes a
/// screenshot when `screenshot` is given.
fn render(browser: &Path, page: &Path, screenshot: Option<&Path>) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    match screenshot {
        Some(png) => cmd
            .arg(format!("--screenshot={}", png.display()))
            .arg("--window-size=1280,2000"),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Checks in a real browser that every picture of a page loaded and its metrics table is there.
fn check_in_browser(page: &Path) {
    let Some(browser) = chromium() else {
        eprintln!("no chromium here: the page is checked as text only (`.ci/run` installs it)");
        return;
    };
    let dom = render(&browser, page, None);
    let loaded = dom
        .split("data-images-loaded=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("the page's load check did not run: {dom:.400}"));
    let (k, n) = loaded.split_once('/').unwrap();
    assert!(
        n != "0" && k == n,
        "{loaded} pictures loaded in {}",
        page.display()
    );
    assert!(dom.contains("id=\"metrics\""), "no metrics table");
    let shot = page.with_extension("png");
    render(&browser, page, Some(&shot));
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "empty screenshot"
    );
}

#[test]
fn eval_adds_sample_quality_on_a_cached_feature_network() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_digits(tmp.path());
    let dir = density_run(tmp.path(), "density", "train.steps=4");
    // what an interrupted first training leaves: a half-written partial folder (and, from older
    // versions, a cache folder without a checkpoint); neither blocks nor stands in for the network
    let partial = tmp.path().join("digits/feature-net.partial");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("checkpoint.safetensors"), b"half").unwrap();
    std::fs::create_dir_all(tmp.path().join("digits/feature-net")).unwrap();
    let report = json(run(&["eval", "--run", &dir, "--json", "--samples", "64"]));
    assert!(
        !partial.exists(),
        "the partial training was moved into place"
    );
    for key in ["fd", "kid_mean", "kid_std", "precision", "recall"] {
        assert!(
            report[key].as_f64().is_some_and(f64::is_finite),
            "{key}: {report}"
        );
    }
    assert_eq!(report["quality_samples"], 64);
    assert_eq!(report["quality_reference"], "digits:test");
    let net = tmp.path().join("digits/feature-net/checkpoint.safetensors");
    assert_eq!(report["feature_net"], net.display().to_string());
    let sha = report["feature_net_sha256"].as_str().unwrap().to_string();
    assert_eq!(
        sha,
        genflow::data::sha256_hex(&std::fs::read(&net).unwrap())
    );

    // the next evaluation reuses the cached network: same file, same numbers
    let again = json(run(&["eval", "--run", &dir, "--json", "--samples", "64"]));
    assert_eq!(again["feature_net_sha256"], sha.as_str());
    assert_eq!(again["fd"], report["fd"]);

    // eval keeps its report in the run folder, and the page shows it with the pictures
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(&dir).join("eval.json")).unwrap())
            .unwrap();
    assert_eq!(saved["fd"], report["fd"]);
    let page = Path::new(&dir).join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains(">fd<") && html.contains("data:image/png;base64,"),
        "{html:.300}"
    );
    check_in_browser(&page);

    // two runs side by side
    let other = density_run(tmp.path(), "other", "train.steps=2");
    let compare = tmp.path().join("compare.html");
    ok(&run(&[
        "report",
        "--compare",
        &dir,
        &other,
        "--out",
        compare.to_str().unwrap(),
    ]));
    let html = std::fs::read_to_string(&compare).unwrap();
    assert!(html.contains(&dir) && html.contains(&other), "{html:.300}");
    check_in_browser(&compare);
}

#[test]
fn metrics_of_the_test_split_against_itself_are_zero_distance() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_digits(tmp.path());
    let test = genflow::data::load(
        genflow::data::DatasetName::Digits,
        genflow::data::Split::Test,
        tmp.path(),
    )
    .unwrap();
    let images = tmp.path().join("test.safetensors");
    let v = genflow::tasks::quality::intensities(&test);
    tensor_file::save(&images, &[("images".to_string(), v)], Default::default()).unwrap();
    let data = tmp.path().display().to_string();
    let report = json(run(&[
        "metrics",
        "--images",
        images.to_str().unwrap(),
        "--against",
        "digits:test",
        "--data-dir",
        &data,
        "--json",
    ]));
    let fd = report["fd"].as_f64().unwrap();
    assert!(fd.abs() < 1e-6, "FD of the test split against itself: {fd}");
    assert_eq!(report["precision"], 1.0);
    assert_eq!(report["recall"], 1.0);
    assert_eq!(report["quality_samples"], 30);

    // bad references and images are one-line errors
    for (against, what) in [
        ("digits", "DATASET:SPLIT"),
        ("nope:test", "unknown data set"),
        ("digits:valid", "split"),
    ] {
        let out = run(&[
            "metrics",
            "--images",
            images.to_str().unwrap(),
            "--against",
            against,
            "--data-dir",
            &data,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.trim().lines().count() == 1 && err.contains(what),
            "{err}"
        );
    }
}
