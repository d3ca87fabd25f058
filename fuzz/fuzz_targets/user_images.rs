//! The user's image files (`genflow::data::user_files::read_images`): a PNG (one image or a grid
//! as genflow draws it), a folder of PNGs, IDX (raw or gzipped) or `.safetensors`.
//!
//! Input: the first byte picks the format (by the file name the reader sees), the second the
//! per-image shape `[C, H, W]` the model takes; the rest is the file.
#![no_main]

mod common;

use genflow::data::user_files::read_images;
use libfuzzer_sys::fuzz_target;

/// File names by format; a name selects the reader.
const NAMES: [&str; 5] = [
    "images.png",
    "images-idx3-ubyte",
    "images-idx3-ubyte.gz",
    "images.safetensors",
    "folder",
];
/// Shapes a model may take, including a channel count no PNG has.
const SHAPES: [[i64; 3]; 8] = [
    [1, 2, 2],
    [3, 2, 2],
    [1, 8, 8],
    [3, 8, 8],
    [1, 28, 28],
    [3, 32, 32],
    [1, 1, 1],
    [2, 4, 4],
];

fuzz_target!(init: common::init(), |data: &[u8]| {
    let Some((&[format, shape], file)) = data.split_first_chunk::<2>() else {
        return;
    };
    let name = NAMES[usize::from(format) % NAMES.len()];
    let shape = SHAPES[usize::from(shape) % SHAPES.len()];
    let path = if name == "folder" {
        let dir = common::folder(name);
        std::fs::write(dir.join("0.png"), file).expect("cannot write a scratch file");
        dir
    } else {
        common::write(name, file)
    };
    if let Some(images) = common::check(read_images(&path, shape)) {
        let size = images.size();
        assert_eq!(size[1..], shape, "images of shape {size:?}");
        assert!(size[0] > 0);
        let (lo, hi) = (images.min().double_value(&[]), images.max().double_value(&[]));
        assert!((0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi), "[{lo}, {hi}]");
    }
});
