//! The crate's modules depend in one direction only, and stay so: this test reads the sources and
//! fails on an import that points up (or sideways within a layer, which could close a circle).
//!
//! The command line (`src/bin/genflow`) is a separate binary crate over the library, which cannot
//! import it. Besides the order of layers, `config` (the run-level settings) must not know any
//! model or task.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The library's top-level modules by layer, top first: a module may import modules of lower
/// layers only.
const LAYERS: &[&[&str]] = &[
    &["bench"],
    &["tasks"],
    &["report"],
    &["config"],
    &["gan"],
    &["train"],
    &["models", "glann"],
    &["flows"],
    &["distributions", "nn", "metrics"],
    &["data"],
    &["plots", "optim", "distributed"],
    &["linalg", "device", "fs", "progress", "seeds", "error"],
];

/// Imports forbidden beyond the layer order.
const FORBIDDEN: &[(&str, &[&str])] = &[("config", &["models", "flows", "data", "tasks"])];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a library source file belongs to (`None` for `lib.rs` and the CLI).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    match first.as_str() {
        "lib.rs" | "bin" => None,
        name => Some(name.trim_end_matches(".rs").to_string()),
    }
}

/// The top-level modules a file names as `crate::<module>` outside comments.
fn imports(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn every_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(&src, f)).collect();
    for m in &modules {
        assert!(
            layer_of(m).is_some(),
            "module {m} is in no layer of tests/layering.rs"
        );
    }
}

#[test]
fn imports_point_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let Some(own) = layer_of(&module) else {
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for target in imports(&text) {
            if target == module {
                continue;
            }
            let up = layer_of(&target).is_some_and(|l| l <= own);
            let forbidden = FORBIDDEN
                .iter()
                .any(|(m, banned)| *m == module && banned.contains(&target.as_str()));
            if up || forbidden {
                wrong.push(format!("{} ({module}) imports {target}", file.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}

/// The checker itself: it sees imports in code, not in comments.
#[test]
fn imports_are_read_from_code_only() {
    let text = "use crate::flows::Flow;\n/// see [`crate::tasks`]\nlet x = crate::nn::assign; // crate::bench\n";
    let found: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(found, ["flows", "nn"]);
}
