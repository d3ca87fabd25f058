//! Inputs that crashed genflow's file readers (found while fuzzing them: `scripts/fuzz`,
//! fuzz/fuzz_targets/), kept as plain tests: each must now be a one-line error of genflow's own,
//! naming the file and what is wrong, never a panic or libtorch's text. The same inputs are seeds
//! of the fuzz corpus (fuzz/seeds.py).

use genflow::data::tensor_file;
use genflow::data::user_files::read_images;
use genflow::train::checkpoint;
use std::path::{Path, PathBuf};

/// A `.safetensors` file: the JSON header (padded to 8 bytes), then the data.
fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut header = header.as_bytes().to_vec();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header);
    out.extend(data);
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The error of `result`, checked to be one line of genflow's own that names `path`.
fn one_line_error<T>(result: genflow::Result<T>, path: &Path) -> String {
    let e = match result {
        Ok(_) => panic!("accepted a bad file: {}", path.display()),
        Err(e) => e,
    };
    let msg = e.to_string();
    assert!(
        !matches!(e, genflow::Error::Torch(_)),
        "libtorch's error: {msg}"
    );
    assert!(!msg.contains('\n'), "more than one line: {msg:?}");
    assert!(
        msg.starts_with(&path.display().to_string()),
        "does not name the file: {msg}"
    );
    msg
}

/// An IDX file of 0 images of 2x2: `read_images` panicked in libtorch's `min()` of an empty tensor.
#[test]
fn idx_of_zero_images_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "images-idx3-ubyte",
        &[0, 0, 8, 3, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2],
    );
    let msg = one_line_error(read_images(&path, [1, 2, 2]), &path);
    assert!(msg.ends_with(": holds no images"), "{msg}");
}

/// A `.safetensors` tensor of 0 images of shape [1, 2, 2]: the same panic.
#[test]
fn safetensors_of_zero_images_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let header = r#"{"images":{"dtype":"U8","shape":[0,1,2,2],"data_offsets":[0,0]}}"#;
    let path = write(dir.path(), "images.safetensors", &safetensors(header, b""));
    let msg = one_line_error(read_images(&path, [1, 2, 2]), &path);
    assert!(msg.ends_with(": holds no images"), "{msg}");
}

/// A tensor of shape [2^63, 0] (no bytes): the dimension wrapped to a negative i64 and libtorch's
/// error reached the user; one of [0, 2^62, 2^62] overflows libtorch's strides.
#[test]
fn tensor_dimensions_past_i64_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    for shape in [
        "[9223372036854775808,0]",
        "[18446744073709551615,0]",
        "[0,4611686018427387904,4611686018427387904]",
    ] {
        let header = format!(r#"{{"e":{{"dtype":"U8","shape":{shape},"data_offsets":[0,0]}}}}"#);
        let path = write(dir.path(), "huge.safetensors", &safetensors(&header, b""));
        let msg = one_line_error(tensor_file::load(&path), &path);
        assert!(msg.contains("too large for a tensor"), "{msg}");
        let msg = one_line_error(checkpoint::load(&path), &path);
        assert!(msg.contains("too large for a tensor"), "{msg}");
    }
    // A dimension of 0 beside sizes that fit is an empty tensor, not an error.
    let header = r#"{"e":{"dtype":"U8","shape":[0,4000000000],"data_offsets":[0,0]}}"#;
    let path = write(dir.path(), "empty.safetensors", &safetensors(header, b""));
    let (tensors, _) = tensor_file::load(&path).unwrap();
    assert_eq!(tensors["e"].size(), [0, 4_000_000_000]);
}

/// A tensor named "a\nb" of an unsupported dtype: the name broke the error over two lines.
#[test]
fn tensor_name_with_a_line_break_stays_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let header = r#"{"a\nb":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}"#;
    let path = write(
        dir.path(),
        "names.safetensors",
        &safetensors(header, b"\0\0"),
    );
    let msg = one_line_error(tensor_file::load(&path), &path);
    assert!(
        msg.ends_with(r#": tensor "a\nb" has unsupported dtype F16"#),
        "{msg}"
    );
}

/// A checkpoint whose `genflow_format` metadata holds a line break: the value broke the error
/// over two lines.
#[test]
fn checkpoint_format_with_a_line_break_stays_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let header = concat!(
        r#"{"__metadata__":{"genflow_step":"1","genflow_format":"2\n3"},"#,
        r#""w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#
    );
    let path = write(
        dir.path(),
        "checkpoint.safetensors",
        &safetensors(header, &1f32.to_le_bytes()),
    );
    let msg = one_line_error(checkpoint::load(&path), &path);
    assert!(
        msg.ends_with(r#": unreadable genflow_format metadata "2\n3""#),
        "{msg}"
    );
}
