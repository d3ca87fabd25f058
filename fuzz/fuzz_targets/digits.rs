//! The digits CSV reader (`genflow::data::digits::read_digits_csv`): the input is the file
//! (plain, or gzipped: the reader decides by the magic bytes).
#![no_main]

mod common;

use genflow::data::digits::read_digits_csv;
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: common::init(), |data: &[u8]| {
    let path = common::write("digits.csv.gz", data);
    if let Some(set) = common::check(read_digits_csv(&path)) {
        assert_eq!(set.images.size()[1..], [1, 8, 8]);
        assert_eq!(set.levels, 17);
    }
});
