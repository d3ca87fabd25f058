//! The optical-recognition digits of scikit-learn's `load_digits` (UCI "Optical Recognition of
//! Handwritten Digits", Alpaydin & Kaynak 1998): `digits.csv.gz`, one image per line as 64
//! comma-separated pixel counts in `0..=16` (an 8x8 image, row-major) followed by the label
//! `0..=9`.

use std::path::Path;

use super::files::read_maybe_gz;
use super::ImageDataset;
use crate::{Error, Result};

/// Pixels per image: 8x8.
const PIXELS: usize = 64;
/// Grey levels: pixel values are counts 0..=16.
pub const LEVELS: u32 = 17;
/// The ten digit classes.
const CLASSES: usize = 10;

/// Reads the digits CSV at `path` (plain or gzipped) into `[N, 1, 8, 8]` images with 17 levels
/// and 10 classes. Blank lines are skipped; a line without 65 values, or with a value that is
/// not an integer in range, is an error naming the file and line.
pub fn read_digits_csv(path: &Path) -> Result<ImageDataset> {
    let bytes = read_maybe_gz(path)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| Error::file(path, format!("is not UTF-8 text, so not a digits CSV: {e}")))?;
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let fields: Vec<&str> = line.split(',').collect();
        let at = |msg: String| Error::file(path, format!("line {}: {msg}", i + 1));
        if fields.len() != PIXELS + 1 {
            return Err(at(format!(
                "{} values, expected {PIXELS} pixels and a label",
                fields.len()
            )));
        }
        for field in &fields[..PIXELS] {
            pixels.push(integer(field, LEVELS - 1).map_err(|m| at(format!("pixel {m}")))? as u8);
        }
        let label =
            integer(fields[PIXELS], CLASSES as u32 - 1).map_err(|m| at(format!("label {m}")))?;
        labels.push(i64::from(label));
    }
    if labels.is_empty() {
        return Err(Error::file(path, "holds no data lines"));
    }
    ImageDataset::from_bytes(
        &pixels,
        [labels.len() as i64, 1, 8, 8],
        &labels,
        LEVELS,
        CLASSES,
    )
}

/// Parses `field` as an integer in `0..=max`; integral decimals such as `16.0` are accepted.
fn integer(field: &str, max: u32) -> std::result::Result<u32, String> {
    let value: f64 = field
        .trim()
        .parse()
        .map_err(|_| format!("`{field}` is not a number"))?;
    if value.fract() != 0.0 || !(0.0..=f64::from(max)).contains(&value) {
        return Err(format!("`{field}` is not an integer in 0..={max}"));
    }
    Ok(value as u32)
}
