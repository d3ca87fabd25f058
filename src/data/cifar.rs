//! The binary version of CIFAR-10 (Krizhevsky, "Learning Multiple Layers of Features from Tiny
//! Images", 2009; <https://www.cs.toronto.edu/~kriz/cifar.html>).
//!
//! Each batch file (`data_batch_1.bin` .. `data_batch_5.bin` for training, `test_batch.bin` for
//! testing) is a sequence of 3073-byte records: one label byte in `0..10`, then the 32x32 red
//! plane, the green plane and the blue plane, each row-major, so a record's pixels are already
//! in `[C, H, W]` order.

use std::path::Path;

use super::files::read_bytes;
use super::idx::checked_labels;
use super::{ImageDataset, Split};
use crate::{Error, Result};

/// Pixels in one image: 3 channels of 32x32.
const PIXELS: usize = 3 * 32 * 32;
/// Bytes in one record: the label byte and the pixels.
const RECORD: usize = 1 + PIXELS;
/// The number of CIFAR-10 classes.
const CLASSES: usize = 10;

/// The batch file names of a split, in reading order.
pub fn batch_names(split: Split) -> &'static [&'static str] {
    match split {
        Split::Train => &[
            "data_batch_1.bin",
            "data_batch_2.bin",
            "data_batch_3.bin",
            "data_batch_4.bin",
            "data_batch_5.bin",
        ],
        Split::Test => &["test_batch.bin"],
    }
}

/// Reads CIFAR-10 binary batch files, concatenated in the given order, into a data set of shape
/// `[N, 3, 32, 32]` with 256 levels and 10 classes. A file whose size is not a positive multiple
/// of 3073 bytes, or with a label outside `0..10`, is an error naming the file and the record.
pub fn read_cifar10_batches<P: AsRef<Path>>(files: &[P]) -> Result<ImageDataset> {
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for path in files.iter().map(AsRef::as_ref) {
        let bytes = read_bytes(path)?;
        if bytes.is_empty() || bytes.len() % RECORD != 0 {
            return Err(Error::file(
                path,
                format!(
                    "size {} bytes is not a positive multiple of the {RECORD}-byte CIFAR-10 record \
                     (1 label byte + {PIXELS} pixels): truncated, or not a CIFAR-10 binary batch",
                    bytes.len()
                ),
            ));
        }
        let label_bytes: Vec<u8> = bytes.chunks_exact(RECORD).map(|r| r[0]).collect();
        let file_labels = checked_labels(&label_bytes, CLASSES)
            .map_err(|msg| Error::file(path, format!("{msg} (the index counts records)")))?;
        labels.extend(file_labels);
        bytes
            .chunks_exact(RECORD)
            .for_each(|r| pixels.extend_from_slice(&r[1..]));
    }
    if labels.is_empty() {
        return Err(Error::config("no CIFAR-10 batch files given"));
    }
    ImageDataset::from_bytes(
        &pixels,
        [labels.len() as i64, 3, 32, 32],
        &labels,
        256,
        CLASSES,
    )
}
