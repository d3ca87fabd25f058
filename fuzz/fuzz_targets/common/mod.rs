//! What every target shares: a scratch folder for the readers that take paths, and the property
//! every reader must have on bad input.
// Each target uses what it needs of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// One scratch folder per fuzzing process (under `$TMPDIR`; `scripts/fuzz` points that at a folder
/// it removes afterwards). Each input overwrites the files of the previous one.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("genflow-fuzz-")
            .tempdir()
            .expect("cannot create a scratch folder")
            .keep()
    })
}

/// Runs once per process: one libtorch thread (the readers make small tensors; more threads only
/// slow a single-job fuzzer down).
pub fn init() {
    genflow::tch::set_num_threads(1);
}

/// Writes `bytes` to the scratch file `name` and returns its path.
pub fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, bytes).expect("cannot write a scratch file");
    path
}

/// A fresh, empty scratch folder `name` (for readers of folders).
pub fn folder(name: &str) -> PathBuf {
    let path = scratch().join(name);
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).expect("cannot create a scratch folder");
    path
}

/// The property of every reader: a bad input is an `Err` whose message is one non-empty line of
/// genflow's own (never libtorch's C++ text). Panics (a finding) otherwise; returns the value of
/// an `Ok`.
pub fn check<T>(result: genflow::Result<T>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                !matches!(e, genflow::Error::Torch(_)),
                "libtorch's error reached the user: {msg}"
            );
            assert!(!msg.trim().is_empty(), "an empty error message: {e:?}");
            assert!(!msg.contains('\n'), "an error of more than one line: {msg}");
            None
        }
    }
}
