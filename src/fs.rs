//! The one way genflow writes a file: atomically.
//!
//! Every file genflow writes (checkpoints, metrics rewrites, configs, pictures, data files, CSV and
//! tensor outputs) goes through [`write_atomic`]: the bytes go to a temporary file in the same
//! folder, which is flushed to disk (`fsync`) and renamed over the target, and then the folder
//! itself is flushed so that the rename survives a power cut. A crash, `kill -9` or Ctrl-C at any
//! moment leaves either the old file or the new one, never a truncated mix.
//!
//! ```
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("hello.txt");
//! genflow::fs::write_atomic(&path, b"hello")?;
//! assert_eq!(std::fs::read(&path)?, b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::{Error, Result};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically (temporary file in the same folder, `fsync`, rename, `fsync`
/// of the folder). The folder must exist. Errors name the path.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        return Err(Error::file(
            path,
            format!(
                "cannot write the file: its folder {} does not exist",
                folder.display()
            ),
        ));
    }
    let fail = |e: std::io::Error| Error::file(path, format!("cannot write the file: {e}"));
    let mut tmp = tempfile::Builder::new()
        .prefix(".genflow-")
        .suffix(".tmp")
        .tempfile_in(folder)
        .map_err(fail)?;
    tmp.write_all(bytes).map_err(fail)?;
    // Temporary files are private (0600); outputs are meant to be shared like any other file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let public = std::fs::Permissions::from_mode(0o644);
        tmp.as_file().set_permissions(public).map_err(fail)?;
    }
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    sync_folder(folder).map_err(fail)
}

/// Flushes a folder's entries (the rename) to disk. Not every platform can open a folder for
/// this; there the rename is as durable as the platform makes it.
fn sync_folder(folder: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(folder)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = folder;
        Ok(())
    }
}
