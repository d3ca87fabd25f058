//! The IDX file format of MNIST and Fashion-MNIST (LeCun et al., "The MNIST database",
//! <http://yann.lecun.com/exdb/mnist/>), raw or gzipped.
//!
//! An IDX file is a 4-byte magic number `00 00 TT DD` (`TT` the element type, `0x08` for
//! unsigned bytes; `DD` the number of dimensions), then `DD` big-endian `u32` sizes, then the
//! elements in row-major order. Image files have 3 dimensions `[N, H, W]`, label files 1 `[N]`.
//!
//! ```
//! # fn main() -> genflow::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("labels-idx1-ubyte");
//! std::fs::write(&path, [0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])?;
//! let labels = genflow::data::idx::read_idx(&path)?;
//! assert_eq!((labels.dims, labels.data), (vec![3], vec![7, 2, 1]));
//! # Ok(()) }
//! ```

use std::path::Path;

use super::files::read_maybe_gz;
use super::ImageDataset;
use crate::{Error, Result};

/// The element-type byte of unsigned-byte IDX files, the only type genflow reads.
const UBYTE: u8 = 0x08;

/// The contents of an IDX file of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// The sizes of the dimensions, outermost first.
    pub dims: Vec<usize>,
    /// The elements in row-major order; `data.len()` is the product of `dims`.
    pub data: Vec<u8>,
}

/// Reads the IDX file at `path` (raw, or gzip-compressed), checking magic, dimensions and length.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    parse_idx(&read_maybe_gz(path)?).map_err(|msg| Error::file(path, msg))
}

/// Parses the bytes of an IDX file; the error is the problem, without the file name.
fn parse_idx(bytes: &[u8]) -> std::result::Result<IdxArray, String> {
    let magic = bytes.get(..4).ok_or_else(|| {
        format!(
            "only {} bytes: too short for the 4-byte IDX header; the file is truncated",
            bytes.len()
        )
    })?;
    if magic[..2] != [0, 0] {
        return Err(format!(
            "wrong magic number {magic:02x?}: not an IDX file (IDX files start with 00 00 08 DIMS)"
        ));
    }
    if magic[2] != UBYTE {
        return Err(format!(
            "IDX element type 0x{:02x} is not supported; only unsigned bytes (0x08) are",
            magic[2]
        ));
    }
    let ndim = usize::from(magic[3]);
    let header = 4 + 4 * ndim;
    let sizes = bytes.get(4..header).ok_or_else(|| {
        format!(
            "only {} bytes: too short for the header of {ndim} dimensions; the file is truncated",
            bytes.len()
        )
    })?;
    let dims: Vec<usize> = sizes
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("dimensions {dims:?} are too large"))?;
    let data = &bytes[header..];
    if data.len() != expected {
        let what = if data.len() < expected {
            "truncated"
        } else {
            "longer than its header says"
        };
        return Err(format!(
            "{what}: dimensions {dims:?} need {expected} data bytes, the file holds {}",
            data.len()
        ));
    }
    Ok(IdxArray {
        dims,
        data: data.to_vec(),
    })
}

/// Reads an IDX image file (`[N, H, W]`) and its IDX label file (`[N]`, each label below
/// `classes`) into one data set of shape `[N, 1, H, W]` with 256 grey levels.
pub fn read_idx_dataset(images: &Path, labels: &Path, classes: usize) -> Result<ImageDataset> {
    let img = read_idx(images)?;
    let &[n, h, w] = img.dims.as_slice() else {
        return Err(Error::file(
            images,
            format!(
                "has {} dimensions {:?}; an IDX image file has 3 [N, H, W]",
                img.dims.len(),
                img.dims
            ),
        ));
    };
    let lab = read_idx(labels)?;
    if lab.dims.len() != 1 {
        return Err(Error::file(
            labels,
            format!(
                "has {} dimensions {:?}; an IDX label file has 1 [N]",
                lab.dims.len(),
                lab.dims
            ),
        ));
    }
    if lab.dims[0] != n {
        return Err(Error::file(
            labels,
            format!(
                "holds {} labels but {} holds {n} images",
                lab.dims[0],
                images.display()
            ),
        ));
    }
    let labels_i64 = checked_labels(&lab.data, classes).map_err(|msg| Error::file(labels, msg))?;
    ImageDataset::from_bytes(
        &img.data,
        [n as i64, 1, h as i64, w as i64],
        &labels_i64,
        256,
        classes,
    )
}

/// Widens label bytes to `i64`, checking each is below `classes`; the error names the first bad
/// label and its position.
pub(crate) fn checked_labels(
    bytes: &[u8],
    classes: usize,
) -> std::result::Result<Vec<i64>, String> {
    match bytes.iter().position(|&l| usize::from(l) >= classes) {
        Some(i) => Err(format!(
            "label {} at index {i} is out of range 0..{classes}",
            bytes[i]
        )),
        None => Ok(bytes.iter().map(|&l| i64::from(l)).collect()),
    }
}
