//! The user's CSV of points (`genflow::data::user_files::read_vectors`).
//!
//! Input: the first byte picks the dimension the model takes (`1 + byte % 8`); the rest is the file.
#![no_main]

mod common;

use genflow::data::user_files::read_vectors;
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: common::init(), |data: &[u8]| {
    let Some((&pick, file)) = data.split_first() else {
        return;
    };
    let dim = 1 + i64::from(pick % 8);
    let path = common::write("points.csv", file);
    if let Some(points) = common::check(read_vectors(&path, dim)) {
        assert_eq!(points.size()[1], dim);
        assert!(points.size()[0] > 0);
    }
});
