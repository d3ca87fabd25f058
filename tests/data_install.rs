//! The installer's checks, on synthetic folders (no network): checksums, missing files, label
//! facts, and the data directory.

use std::io::Write;
use std::path::Path;

use genflow::data::{default_data_dir, install, sha256_hex, verify, DatasetName};

/// FIPS 180-2, appendix B.1 ("abc") and the well-known digest of the empty message.
#[test]
fn sha256_matches_published_digests() {
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        sha256_hex(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    dims.iter().for_each(|d| out.extend(d.to_be_bytes()));
    out.extend_from_slice(data);
    out
}

/// Writes a well-formed but tiny MNIST-like set (2 images per split) into `folder`.
fn write_fake_mnist(folder: &Path, labels: [u8; 2]) {
    std::fs::create_dir_all(folder).unwrap();
    for split in ["train", "t10k"] {
        let images = idx_bytes(&[2, 28, 28], &[0; 2 * 28 * 28]);
        std::fs::write(folder.join(format!("{split}-images-idx3-ubyte")), images).unwrap();
        std::fs::write(
            folder.join(format!("{split}-labels-idx1-ubyte")),
            idx_bytes(&[2], &labels),
        )
        .unwrap();
    }
}

#[test]
fn checksum_mismatch_fails_naming_file_and_both_hashes() {
    let (src, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_fake_mnist(&src.path().join("nested"), [5, 0]);
    let err = install(DatasetName::Mnist, dir.path(), Some(src.path()))
        .unwrap_err()
        .to_string();
    let file = src.path().join("nested").join("train-images-idx3-ubyte");
    let actual = sha256_hex(&std::fs::read(&file).unwrap());
    assert!(
        err.contains(&file.display().to_string()),
        "names the file: {err}"
    );
    assert!(
        err.contains("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        "expected hash: {err}"
    );
    assert!(err.contains(&actual), "actual hash: {err}");
    assert!(
        !dir.path()
            .join("mnist")
            .join("train-images-idx3-ubyte")
            .exists(),
        "nothing bad is installed"
    );
}

#[test]
fn gzipped_source_is_checked_on_its_uncompressed_content() {
    let (src, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let images = idx_bytes(&[1, 1, 1], &[0]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&images).unwrap();
    let gz = gz.finish().unwrap();
    std::fs::write(src.path().join("train-images-idx3-ubyte.gz"), &gz).unwrap();
    let err = install(DatasetName::FashionMnist, dir.path(), Some(src.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train-images-idx3-ubyte.gz") && err.contains("checksum mismatch"),
        "{err}"
    );
    assert!(
        err.contains(&sha256_hex(&images)) && !err.contains(&sha256_hex(&gz)),
        "{err}"
    );
}

#[test]
fn dotted_idx_names_are_found_and_absent_files_reported() {
    let (src, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let dotted = src.path().join("train-images.idx3-ubyte");
    std::fs::write(&dotted, idx_bytes(&[1, 1, 1], &[0])).unwrap();
    let err = install(DatasetName::Mnist, dir.path(), Some(src.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&dotted.display().to_string()) && err.contains("checksum mismatch"),
        "{err}"
    );
    std::fs::remove_file(&dotted).unwrap();
    let err = install(DatasetName::Mnist, dir.path(), Some(src.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("holds no train-images-idx3-ubyte or train-images-idx3-ubyte.gz"),
        "{err}"
    );
}

#[test]
fn missing_source_folder_and_cifar_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent");
    let err = install(DatasetName::Digits, dir.path(), Some(&absent))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&absent.display().to_string()) && err.contains("cannot read"),
        "{err}"
    );
    let err = install(DatasetName::Cifar10, dir.path(), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("CIFAR-10 is in no package registry"), "{err}");
}

#[test]
fn verify_rejects_mislabelled_data() {
    let dir = tempfile::tempdir().unwrap();
    write_fake_mnist(&dir.path().join("mnist"), [5, 0]);
    let err = verify(DatasetName::Mnist, dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("image count 2, expected 60000"), "{err}");
    assert!(
        err.contains(&dir.path().join("mnist").display().to_string()),
        "{err}"
    );
}

/// A digits file of the right size (1797 lines) whose first label is 1 instead of 0.
#[test]
fn verify_rejects_wrong_first_labels() {
    let dir = tempfile::tempdir().unwrap();
    let line = |label: usize| format!("{}{label}\n", "0,".repeat(64));
    let text: String = (0..1797).map(|i| line((i + 1) % 10)).collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(text.as_bytes()).unwrap();
    std::fs::create_dir_all(dir.path().join("digits")).unwrap();
    std::fs::write(
        dir.path().join("digits").join("digits.csv.gz"),
        gz.finish().unwrap(),
    )
    .unwrap();
    let err = verify(DatasetName::Digits, dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train split: first labels [1, 2, 3, 4, 5, 6, 7, 8, 9, 0], expected [0, 1"),
        "{err}"
    );
}

#[test]
fn data_dir_follows_genflow_data() {
    // The only test in this binary that reads or sets the variable.
    std::env::set_var("GENFLOW_DATA", "/somewhere/data");
    assert_eq!(default_data_dir(), Path::new("/somewhere/data"));
    std::env::remove_var("GENFLOW_DATA");
    assert!(
        default_data_dir().ends_with(".cache/genflow/data") || std::env::var_os("HOME").is_none()
    );
}
