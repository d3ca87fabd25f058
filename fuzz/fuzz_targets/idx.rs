//! The IDX reader (`genflow::data::idx`): one file read alone, and an image file with its label
//! file read as a data set.
//!
//! Input: two bytes (big-endian) `k`, then the rest: one IDX file (raw, or gzipped: the reader
//! decides by the magic bytes) read alone; then its first `k` bytes are read as an image file
//! and the others as its label file (10 classes).
#![no_main]

mod common;

use genflow::data::idx;
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: common::init(), |data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let path = common::write("whole-idx3-ubyte", rest);
    if let Some(array) = common::check(idx::read_idx(&path)) {
        let product: usize = array.dims.iter().product();
        assert_eq!(array.data.len(), product, "dims {:?}", array.dims);
    }

    let cut = usize::from(u16::from_be_bytes(*head)).min(rest.len());
    let (images, labels) = rest.split_at(cut);
    let images = common::write("images-idx3-ubyte", images);
    let labels = common::write("labels-idx1-ubyte", labels);
    if let Some(set) = common::check(idx::read_idx_dataset(&images, &labels, 10)) {
        assert_eq!(set.images.size()[1], 1);
        assert_eq!(set.labels.size(), [set.len() as i64]);
    }
});
