//! The report page of a run (`report.html` in its folder) and of several runs side by side: one
//! self-contained HTML file (pictures embedded as data URIs) that opens in any browser without a
//! server.
//!
//! A run's page shows its task and step, the metrics of its last evaluation (`eval.json`) and of
//! its last logged step (`metrics.jsonl`), every picture genflow drew into the folder (curves,
//! samples, reconstructions, interpolations, density maps) and its configuration. The comparison
//! page has one metrics table with a row per run and a row of each run's samples.
//!
//! ```
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("config.toml"), "task = \"toy-density\"\nseed = 0\n")?;
//! std::fs::write(dir.path().join("metrics.jsonl"), "{\"step\": 10, \"loss\": 2.5}\n")?;
//! let page = genflow::report::write_run_report(dir.path())?;
//! let html = std::fs::read_to_string(page)?;
//! assert!(html.contains("toy-density") && html.contains("2.5"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::train::run_dir::{CONFIG_FILE, EVAL_FILE, REPORT_FILE};
use crate::train::METRICS_FILE;
use crate::{Error, Result};
use base64::Engine;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// The pictures a page shows, in this order, when the run folder has them; any other PNG of the
/// folder follows.
const PICTURE_ORDER: &[&str] = &[
    "samples.png",
    "density.png",
    "reconstructions.png",
    "interpolations.png",
    "curves.png",
];

/// What a run folder holds, as the pages show it.
struct RunSummary {
    dir: PathBuf,
    task: String,
    config: String,
    /// The last evaluation's scalar metrics, then the last logged step's (prefixed `last_`).
    metrics: BTreeMap<String, serde_json::Value>,
    pictures: Vec<PathBuf>,
}

fn read_summary(dir: &Path) -> Result<RunSummary> {
    if !dir.join(CONFIG_FILE).exists() {
        return Err(Error::file(dir, "holds no genflow run (no config.toml)"));
    }
    let config = std::fs::read_to_string(dir.join(CONFIG_FILE))
        .map_err(|e| Error::file(dir.join(CONFIG_FILE), e.to_string()))?;
    let task = toml::from_str::<toml::Table>(&config)
        .ok()
        .and_then(|t| t.get("task").and_then(|v| v.as_str()).map(str::to_string))
        .unwrap_or_else(|| "toy-density".into());
    let mut metrics = BTreeMap::new();
    if let Ok(text) = std::fs::read_to_string(dir.join(EVAL_FILE)) {
        if let Ok(serde_json::Value::Object(eval)) = serde_json::from_str(&text) {
            metrics.extend(
                eval.into_iter()
                    .filter(|(_, v)| !v.is_object() && !v.is_array()),
            );
        }
    }
    if let Ok(text) = std::fs::read_to_string(dir.join(METRICS_FILE)) {
        if let Some(serde_json::Value::Object(last)) = text
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
        {
            for (k, v) in last {
                metrics.insert(format!("last_{k}"), v);
            }
        }
    }
    let mut pictures: Vec<PathBuf> = PICTURE_ORDER
        .iter()
        .map(|name| dir.join(name))
        .filter(|p| p.exists())
        .collect();
    let mut others: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::file(dir, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "png") && !pictures.contains(p))
        .collect();
    others.sort();
    pictures.extend(others);
    Ok(RunSummary {
        dir: dir.to_path_buf(),
        task,
        config,
        metrics,
        pictures,
    })
}

/// `<img>` of a PNG file as a data URI.
fn embedded_image(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, e.to_string()))?;
    let data = base64::engine::general_purpose::STANDARD.encode(bytes);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    Ok(format!(
        "<img alt=\"{}\" title=\"{}\" src=\"data:image/png;base64,{data}\">",
        escape(&name),
        escape(&name)
    ))
}

/// `text` with HTML's special characters escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A metric's value for a table cell: whole numbers as integers, other numbers to 6 decimals, or
/// in scientific notation with 6 significant digits when that would hide them (below 1e-3 or from
/// 1e7 on); a missing value as a dash.
fn cell(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e7 => format!("{f:.0}"),
            (None, Some(f)) if !(1e-3..1e7).contains(&f.abs()) => format!("{f:.5e}"),
            (None, Some(f)) => format!("{f:.6}"),
            _ => n.to_string(),
        },
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(s) => escape(s),
        other => escape(&other.to_string()),
    }
}

/// The page's shell: a title, a style, the body, and a check that every picture loaded (its
/// result is on `<body data-images-loaded="k/n">`, for browser tests).
fn page(title: &str, body: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
td.num {{ text-align: right; font-family: monospace; }}
img {{ max-width: 46em; margin: 0.3em; border: 1px solid #ddd; vertical-align: top; }}
pre {{ background: #f6f6f6; padding: 0.8em; overflow-x: auto; }}
</style></head>
<body>
{body}
<script>
window.addEventListener("load", () => {{
  const images = Array.from(document.images);
  const loaded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.imagesLoaded = loaded + "/" + images.length;
}});
</script>
</body></html>
"#,
        title = escape(title)
    )
}

/// Writes `dir/report.html` for the run in `dir`; returns its path.
pub fn write_run_report(dir: &Path) -> Result<PathBuf> {
    let run = read_summary(dir)?;
    let name = dir
        .canonicalize()
        .unwrap_or_else(|_| dir.to_path_buf())
        .display()
        .to_string();
    let mut body = format!(
        "<h1>{}</h1>\n<p>task <b>{}</b></p>\n",
        escape(&name),
        escape(&run.task)
    );
    body.push_str(
        "<h2>Metrics</h2>\n<table id=\"metrics\">\n<tr><th>metric</th><th>value</th></tr>\n",
    );
    for (k, v) in &run.metrics {
        let _ = writeln!(
            body,
            "<tr><td>{}</td><td class=\"num\">{}</td></tr>",
            escape(k),
            cell(v)
        );
    }
    body.push_str("</table>\n<h2>Pictures</h2>\n");
    for picture in &run.pictures {
        body.push_str(&embedded_image(picture)?);
        body.push('\n');
    }
    let _ = write!(
        body,
        "<h2>Configuration</h2>\n<pre>{}</pre>\n",
        escape(&run.config)
    );
    let path = dir.join(REPORT_FILE);
    crate::fs::write_atomic(
        &path,
        page(&format!("genflow run {name}"), &body).as_bytes(),
    )?;
    Ok(path)
}

/// Writes one page comparing the runs in `dirs` to `out`: a metrics table (a row per run, the
/// metrics any of them has as columns) and each run's samples (or density map) side by side.
pub fn write_comparison(dirs: &[PathBuf], out: &Path) -> Result<()> {
    if dirs.len() < 2 {
        return Err(Error::config("--compare needs at least two run folders"));
    }
    let runs = dirs
        .iter()
        .map(|d| read_summary(d))
        .collect::<Result<Vec<_>>>()?;
    let keys: std::collections::BTreeSet<&String> = runs
        .iter()
        .flat_map(|r| {
            r.metrics
                .iter()
                .filter(|(_, v)| v.is_number())
                .map(|(k, _)| k)
        })
        .collect();
    let mut body = String::from(
        "<h1>genflow runs compared</h1>\n<table id=\"metrics\">\n<tr><th>run</th><th>task</th>",
    );
    for k in &keys {
        let _ = write!(body, "<th>{}</th>", escape(k));
    }
    body.push_str("</tr>\n");
    for run in &runs {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td>",
            escape(&run.dir.display().to_string()),
            escape(&run.task)
        );
        for k in &keys {
            let value = run.metrics.get(*k).map(cell).unwrap_or_default();
            let _ = write!(body, "<td class=\"num\">{value}</td>");
        }
        body.push_str("</tr>\n");
    }
    body.push_str("</table>\n<h2>Samples</h2>\n<table id=\"samples\"><tr>\n");
    for run in &runs {
        let picture = ["samples.png", "density.png", "curves.png"]
            .iter()
            .map(|name| run.dir.join(name))
            .find(|p| p.exists());
        let image = picture
            .as_deref()
            .map(embedded_image)
            .transpose()?
            .unwrap_or_default();
        let _ = writeln!(
            body,
            "<td><p>{}</p>{image}</td>",
            escape(&run.dir.display().to_string())
        );
    }
    body.push_str("</tr></table>\n");
    crate::fs::write_atomic(out, page("genflow runs compared", &body).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::cell;
    use serde_json::json;

    #[test]
    fn cells_keep_small_and_large_numbers_readable() {
        assert_eq!(cell(&json!(11256)), "11256");
        assert_eq!(cell(&json!(30.019387629)), "30.019388");
        assert_eq!(cell(&json!(0.0)), "0");
        assert_eq!(cell(&json!(28187.0)), "28187");
        assert_eq!(cell(&json!(1.5609374e-7)), "1.56094e-7");
        assert_eq!(cell(&json!(2.5e9)), "2.50000e9");
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!("a<b")), "a&lt;b");
    }
}
