//! File helpers shared by the readers and installers: reading with the path in every error,
//! transparent gzip decompression and SHA-256 (writes go through [`crate::fs::write_atomic`]).

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The two magic bytes that open every gzip member (RFC 1952, section 2.3.1).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Reads the whole file at `path`; an I/O failure becomes an [`Error::File`] naming it.
pub(crate) fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read the file: {e}")))
}

/// Reads the file at `path`, decompressing it first when it starts with the gzip magic bytes,
/// so raw and `.gz` copies of a file are read alike.
pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_bytes(path)?;
    if bytes.starts_with(&GZIP_MAGIC) {
        gunzip(&bytes, path)
    } else {
        Ok(bytes)
    }
}

/// Decompresses gzip `bytes` read from `path` (the path only names the file in errors).
pub(crate) fn gunzip(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|e| Error::file(path, format!("corrupt or truncated gzip data: {e}")))?;
    Ok(out)
}

/// The SHA-256 digest (FIPS 180-4) of `bytes` as 64 lowercase hex digits.
///
/// ```
/// assert_eq!(
///     genflow::data::sha256_hex(b"abc"),
///     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
/// );
/// ```
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
