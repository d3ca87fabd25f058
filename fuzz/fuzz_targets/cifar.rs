//! The CIFAR-10 batch reader (`genflow::data::cifar::read_cifar10_batches`).
//!
//! Input: two bytes (big-endian) `k`, then the rest: one batch file read alone; then its first
//! `k` bytes are read as a first batch file and the others as a second, together.
#![no_main]

mod common;

use genflow::data::cifar::read_cifar10_batches;
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: common::init(), |data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let whole = common::write("data_batch_1.bin", rest);
    if let Some(set) = common::check(read_cifar10_batches(&[&whole])) {
        assert_eq!(set.images.size()[1..], [3, 32, 32]);
    }

    let cut = usize::from(u16::from_be_bytes(*head)).min(rest.len());
    let (first, second) = rest.split_at(cut);
    let first = common::write("data_batch_2.bin", first);
    let second = common::write("data_batch_3.bin", second);
    common::check(read_cifar10_batches(&[first, second]));
});
