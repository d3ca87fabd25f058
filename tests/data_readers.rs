//! Readers of the standard image-data formats, on files the tests write themselves, and the
//! data set type (loading, subsets, batches, names).

use std::io::Write;
use std::path::{Path, PathBuf};

use genflow::data::cifar::read_cifar10_batches;
use genflow::data::digits::read_digits_csv;
use genflow::data::folder::read_image_folder;
use genflow::data::idx::{read_idx, read_idx_dataset};
use genflow::data::{load, DatasetName, ImageDataset, Split};
use tch::{Kind, Tensor};

/// The bytes of an unsigned-byte IDX file with sizes `dims` and elements `data`.
fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    dims.iter().for_each(|d| out.extend(d.to_be_bytes()));
    out.extend_from_slice(data);
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The error of `result` as text, checked to name `path` and to contain `problem`.
fn assert_error<T: std::fmt::Debug>(result: genflow::Result<T>, path: &Path, problem: &str) {
    let msg = result.unwrap_err().to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "error does not name {path:?}: {msg}"
    );
    assert!(
        msg.contains(problem),
        "error does not say `{problem}`: {msg}"
    );
}

fn u8s(t: &Tensor) -> Vec<u8> {
    Vec::<u8>::try_from(&t.flatten(0, -1)).unwrap()
}

fn i64s(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t).unwrap()
}

/// Three 2x4 images with pixels 0..24 and labels 7, 2, 9.
const PIXELS: [u8; 24] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
];
const LABELS: [u8; 3] = [7, 2, 9];

fn check_idx_pair(data: &ImageDataset) {
    assert_eq!(data.images.size(), [3, 1, 2, 4]);
    assert_eq!(
        (data.images.kind(), data.labels.kind()),
        (Kind::Uint8, Kind::Int64)
    );
    assert_eq!(u8s(&data.images), PIXELS);
    assert_eq!(i64s(&data.labels), [7, 2, 9]);
    assert_eq!(
        (data.levels, data.classes, data.shape()),
        (256, 10, [1, 2, 4])
    );
    // Row-major: image 1, row 1, column 2 is element 8 + 4 + 2.
    assert_eq!(data.images.int64_value(&[1, 0, 1, 2]), 14);
}

#[test]
fn idx_raw_and_gzip_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let images = idx_bytes(&[3, 2, 4], &PIXELS);
    let labels = idx_bytes(&[3], &LABELS);
    let raw = (
        write(dir.path(), "img", &images),
        write(dir.path(), "lab", &labels),
    );
    let gz = (
        write(dir.path(), "img.gz", &gzip(&images)),
        write(dir.path(), "lab.gz", &gzip(&labels)),
    );
    check_idx_pair(&read_idx_dataset(&raw.0, &raw.1, 10).unwrap());
    check_idx_pair(&read_idx_dataset(&gz.0, &gz.1, 10).unwrap());
    let array = read_idx(&gz.0).unwrap();
    assert_eq!((array.dims, array.data), (vec![3, 2, 4], PIXELS.to_vec()));
}

#[test]
fn load_finds_gzipped_idx_in_the_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "fashion-mnist/t10k-images-idx3-ubyte.gz",
        &gzip(&idx_bytes(&[3, 2, 4], &PIXELS)),
    );
    write(
        dir.path(),
        "fashion-mnist/t10k-labels-idx1-ubyte",
        &idx_bytes(&[3], &LABELS),
    );
    check_idx_pair(&load(DatasetName::FashionMnist, Split::Test, dir.path()).unwrap());
}

#[test]
fn corrupt_idx_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let labels = write(dir.path(), "labels", &idx_bytes(&[3], &LABELS));
    let images = write(dir.path(), "images", &idx_bytes(&[3, 2, 4], &PIXELS));
    let cases: [(&str, Vec<u8>, &str); 6] = [
        ("short", vec![0, 0], "too short"),
        ("magic", vec![0x50, 0x4b, 3, 4, 0, 0, 0, 0], "wrong magic"),
        (
            "type",
            vec![0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0],
            "element type 0x0d",
        ),
        (
            "header",
            vec![0, 0, 8, 3, 0, 0, 0, 3],
            "header of 3 dimensions",
        ),
        (
            "truncated",
            idx_bytes(&[3, 2, 4], &PIXELS[..20]),
            "truncated",
        ),
        (
            "long",
            idx_bytes(&[3, 2, 4], &[0; 25]),
            "longer than its header",
        ),
    ];
    for (name, bytes, problem) in cases {
        let path = write(dir.path(), name, &bytes);
        assert_error(read_idx_dataset(&path, &labels, 10), &path, problem);
    }
    let garbled = write(dir.path(), "garbled.gz", &gzip(&PIXELS)[..12]);
    assert_error(read_idx(&garbled), &garbled, "gzip");

    let two = write(dir.path(), "two-labels", &idx_bytes(&[2], &LABELS[..2]));
    assert_error(
        read_idx_dataset(&images, &two, 10),
        &two,
        "holds 2 labels but",
    );
    let bad = write(dir.path(), "bad-labels", &idx_bytes(&[3], &[7, 12, 9]));
    assert_error(
        read_idx_dataset(&images, &bad, 10),
        &bad,
        "label 12 at index 1 is out of range 0..10",
    );
    assert_error(
        read_idx_dataset(&labels, &labels, 10),
        &labels,
        "an IDX image file has 3",
    );
    assert_error(
        read_idx_dataset(&images, &images, 10),
        &images,
        "an IDX label file has 1",
    );
}

/// A CIFAR-10 record: label, then pixel `c*1024 + y*32 + x` has value `(seed + 7c + 3y + x) % 256`.
fn cifar_record(label: u8, seed: usize) -> Vec<u8> {
    let mut rec = vec![label];
    for c in 0..3 {
        for y in 0..32 {
            rec.extend((0..32).map(|x| ((seed + 7 * c + 3 * y + x) % 256) as u8));
        }
    }
    rec
}

#[test]
fn cifar_binary_batches_are_read_in_order_and_channel_planes() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "data_batch_1.bin",
        &[cifar_record(3, 0), cifar_record(9, 50)].concat(),
    );
    let b = write(dir.path(), "data_batch_2.bin", &cifar_record(0, 100));
    let data = read_cifar10_batches(&[a, b]).unwrap();
    assert_eq!(data.images.size(), [3, 3, 32, 32]);
    assert_eq!(i64s(&data.labels), [3, 9, 0]);
    for (n, seed) in [0, 50, 100].into_iter().enumerate() {
        for (c, y, x) in [(0, 0, 0), (1, 5, 31), (2, 31, 7)] {
            let want = ((seed + 7 * c + 3 * y + x) % 256) as i64;
            assert_eq!(
                data.images
                    .int64_value(&[n as i64, c as i64, y as i64, x as i64]),
                want
            );
        }
    }
    assert_eq!((data.levels, data.classes), (256, 10));
}

#[test]
fn load_reads_cifar10_test_batch_and_reports_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "cifar10/test_batch.bin", &cifar_record(4, 1));
    let test = load(DatasetName::Cifar10, Split::Test, dir.path()).unwrap();
    assert_eq!(i64s(&test.labels), [4]);
    let missing = dir.path().join("cifar10").join("data_batch_1.bin");
    assert_error(
        load(DatasetName::Cifar10, Split::Train, dir.path()),
        &missing,
        "CIFAR-10",
    );
}

#[test]
fn corrupt_cifar_batches_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let short = write(dir.path(), "short.bin", &cifar_record(1, 0)[..3000]);
    assert_error(read_cifar10_batches(&[&short]), &short, "3073-byte");
    let empty = write(dir.path(), "empty.bin", &[]);
    assert_error(
        read_cifar10_batches(&[&empty]),
        &empty,
        "not a positive multiple",
    );
    let label = write(
        dir.path(),
        "label.bin",
        &[cifar_record(1, 0), cifar_record(10, 0)].concat(),
    );
    assert_error(
        read_cifar10_batches(&[&label]),
        &label,
        "label 10 at index 1",
    );
    let absent = dir.path().join("absent.bin");
    assert_error(read_cifar10_batches(&[&absent]), &absent, "cannot read");
}

fn save_image(path: &Path, img: image::DynamicImage) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

fn grey(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> image::DynamicImage {
    image::GrayImage::from_fn(w, h, |x, y| image::Luma([f(x, y)])).into()
}

#[test]
fn image_folder_greyscale_classes_sorted_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    save_image(
        &root.join("zebra/b.png"),
        grey(3, 2, |x, y| (10 * y + x) as u8),
    );
    save_image(&root.join("zebra/a.png"), grey(3, 2, |_, _| 200));
    save_image(&root.join("ant/only.png"), grey(3, 2, |x, _| x as u8));
    std::fs::write(root.join("ant/notes.txt"), "not an image").unwrap();
    std::fs::write(root.join("readme.md"), "ignored").unwrap();
    let folder = read_image_folder(root).unwrap();
    assert_eq!(folder.class_names, ["ant", "zebra"]);
    let data = &folder.dataset;
    assert_eq!(data.images.size(), [3, 1, 2, 3]);
    assert_eq!(i64s(&data.labels), [0, 1, 1]);
    let pixels = u8s(&data.images);
    assert_eq!(pixels[..6], [0, 1, 2, 0, 1, 2]);
    assert_eq!(pixels[6..12], [200; 6]);
    assert_eq!(pixels[12..], [0, 1, 2, 10, 11, 12]);
}

#[test]
fn image_folder_colour_images_become_rgb_planes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let rgb = image::RgbImage::from_fn(2, 2, |x, y| image::Rgb([x as u8, 10 + y as u8, 100]));
    save_image(&root.join("c/rgb.png"), rgb.into());
    save_image(&root.join("g/grey.png"), grey(2, 2, |_, _| 42));
    let rgb_jpeg = image::RgbImage::from_pixel(16, 16, image::Rgb([200, 30, 90]));
    save_image(&root.join("j/solid.JPG"), rgb_jpeg.into());
    let err = read_image_folder(root).unwrap_err().to_string();
    assert!(
        err.contains("solid.JPG") && err.contains("is 16x16 but"),
        "{err}"
    );
    std::fs::remove_file(root.join("j/solid.JPG")).unwrap();
    std::fs::remove_dir(root.join("j")).unwrap();

    let data = read_image_folder(root).unwrap().dataset;
    assert_eq!(data.images.size(), [2, 3, 2, 2]);
    assert_eq!(
        u8s(&data.images.get(0)),
        [0, 1, 0, 1, 10, 10, 11, 11, 100, 100, 100, 100]
    );
    assert_eq!(u8s(&data.images.get(1)), [42; 12]);
}

#[test]
fn image_folder_reads_jpeg() {
    let dir = tempfile::tempdir().unwrap();
    let solid = image::RgbImage::from_pixel(16, 16, image::Rgb([200, 30, 90]));
    save_image(&dir.path().join("k/solid.jpeg"), solid.into());
    let data = read_image_folder(dir.path()).unwrap().dataset;
    assert_eq!(data.images.size(), [1, 3, 16, 16]);
    // JPEG is lossy; a flat colour survives within a few levels (YCbCr rounding).
    for (c, want) in [200i64, 30, 90].into_iter().enumerate() {
        let got = data.images.int64_value(&[0, c as i64, 8, 8]);
        assert!((got - want).abs() <= 3, "channel {c}: {got} vs {want}");
    }
}

#[test]
fn image_folder_problems_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    assert_error(read_image_folder(root), root, "no class subfolders");
    std::fs::create_dir(root.join("empty")).unwrap();
    assert_error(read_image_folder(root), &root.join("empty"), "no .png");
    save_image(&root.join("empty/ok.png"), grey(2, 2, |_, _| 1));
    let broken = write(root, "empty/broken.png", b"\x89PNG\r\n\x1a\nnot really");
    assert_error(read_image_folder(root), &broken, "cannot decode");
    std::fs::remove_file(&broken).unwrap();
    save_image(&root.join("empty/wide.png"), grey(3, 2, |_, _| 1));
    assert_error(
        read_image_folder(root),
        &root.join("empty/wide.png"),
        "is 3x2 but",
    );
}

/// A digits CSV line: 64 pixels `(i + k) % 17` and the label.
fn digits_line(i: usize, label: usize) -> String {
    let pixels: Vec<String> = (0..64).map(|k| ((i + k) % 17).to_string()).collect();
    format!("{},{label}\n", pixels.join(","))
}

#[test]
fn digits_csv_plain_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0..4).map(|i| digits_line(i, 9 - i)).collect::<String>() + "\n";
    let plain = write(dir.path(), "digits.csv", text.as_bytes());
    let gz = write(dir.path(), "digits.csv.gz", &gzip(text.as_bytes()));
    for path in [plain, gz] {
        let data = read_digits_csv(&path).unwrap();
        assert_eq!(data.images.size(), [4, 1, 8, 8]);
        assert_eq!(i64s(&data.labels), [9, 8, 7, 6]);
        assert_eq!((data.levels, data.classes), (17, 10));
        let want: Vec<u8> = (0..4)
            .flat_map(|i| (0..64).map(move |k| ((i + k) % 17) as u8))
            .collect();
        assert_eq!(u8s(&data.images), want);
    }
}

#[test]
fn corrupt_digits_csv_is_an_error_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = digits_line(0, 1);
    let cases = [
        ("fields", format!("{good}1,2,3\n"), "line 2: 3 values"),
        (
            "pixel",
            good.replacen("0,", "17,", 1),
            "line 1: pixel `17` is not an integer in 0..=16",
        ),
        (
            "label",
            digits_line(0, 10),
            "label `10` is not an integer in 0..=9",
        ),
        (
            "text",
            good.replacen("0,", "x,", 1),
            "pixel `x` is not a number",
        ),
        (
            "fraction",
            good.replacen("0,", "0.5,", 1),
            "`0.5` is not an integer",
        ),
        ("empty", String::new(), "holds no data lines"),
    ];
    for (name, text, problem) in cases {
        let path = write(dir.path(), name, text.as_bytes());
        assert_error(read_digits_csv(&path), &path, problem);
    }
}

#[test]
fn digits_split_first_1500_train_rest_test() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0..1510).map(|i| digits_line(i, i % 10)).collect();
    write(dir.path(), "digits/digits.csv.gz", &gzip(text.as_bytes()));
    let train = load(DatasetName::Digits, Split::Train, dir.path()).unwrap();
    let test = load(DatasetName::Digits, Split::Test, dir.path()).unwrap();
    assert_eq!((train.len(), test.len()), (1500, 10));
    assert_eq!(i64s(&test.labels), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    // Test image 0 is line 1500: pixel k = (1500 + k) % 17.
    assert_eq!(test.images.int64_value(&[0, 0, 0, 0]), 1500 % 17);
}

#[test]
fn missing_data_says_how_to_install() {
    let dir = tempfile::tempdir().unwrap();
    for (name, cmd) in [
        (DatasetName::Mnist, "mnist"),
        (DatasetName::Digits, "digits"),
    ] {
        let msg = load(name, Split::Train, dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(&format!("run `genflow data install {cmd}`")),
            "{msg}"
        );
    }
}

/// Ten 1x1x1 images whose pixel equals their index, labels index % 3.
fn counting(n: u8) -> ImageDataset {
    let images = Tensor::from_slice(&(0..n).collect::<Vec<u8>>()).view([n as i64, 1, 1, 1]);
    let labels = Tensor::from_slice(&(0..n as i64).map(|i| i % 3).collect::<Vec<_>>());
    ImageDataset::new(images, labels, 256, 3).unwrap()
}

#[test]
fn batches_cover_every_image_once_and_shuffle_by_seed() {
    let data = counting(10);
    let order = |seed| -> Vec<Vec<u8>> {
        data.batches(4, seed)
            .unwrap()
            .map(|(x, _)| u8s(&x))
            .collect()
    };
    let plain = order(None);
    assert_eq!(plain, [vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
    let shuffled = order(Some(1));
    assert_eq!(
        shuffled,
        order(Some(1)),
        "the same seed gives the same batches"
    );
    assert_ne!(shuffled, order(Some(2)), "another seed gives another order");
    assert_ne!(shuffled, plain);
    let mut all: Vec<u8> = shuffled.concat();
    all.sort();
    assert_eq!(all, (0..10).collect::<Vec<u8>>());
    for (x, y) in data.batches(3, Some(5)).unwrap() {
        let (x, y) = (u8s(&x), i64s(&y));
        assert!(
            x.iter().zip(&y).all(|(&p, &l)| i64::from(p) % 3 == l),
            "labels follow images"
        );
    }
    assert_eq!(data.batches(3, None).unwrap().len(), 4);
    assert!(data.batches(0, None).is_err());
}

#[test]
fn subset_counts_and_validation() {
    let data = counting(10);
    let sub = data.subset(4).unwrap();
    assert_eq!((sub.len(), u8s(&sub.images)), (4, vec![0, 1, 2, 3]));
    assert_eq!(data.class_counts().unwrap(), [4, 3, 3]);
    assert!(data.subset(0).is_err() && data.subset(11).is_err());
    let labels = Tensor::from_slice(&[0i64, 3]);
    let images = Tensor::zeros([2, 1, 1, 1], (Kind::Uint8, tch::Device::Cpu));
    assert!(
        ImageDataset::new(images.shallow_clone(), labels, 256, 3).is_err(),
        "label 3 of 3 classes"
    );
    let labels = Tensor::from_slice(&[0i64, 1]);
    assert!(
        ImageDataset::new(images.shallow_clone() + 20, labels.shallow_clone(), 17, 3).is_err(),
        "pixel 20 of 17 levels"
    );
    assert!(
        ImageDataset::new(images.to_kind(Kind::Float), labels, 256, 3).is_err(),
        "float images"
    );
}

#[test]
fn names_parse_display_and_serialise() {
    for (name, text) in [
        (DatasetName::Mnist, "mnist"),
        (DatasetName::FashionMnist, "fashion-mnist"),
        (DatasetName::Digits, "digits"),
        (DatasetName::Cifar10, "cifar10"),
    ] {
        assert_eq!(text.parse::<DatasetName>().unwrap(), name);
        assert_eq!(name.to_string(), text);
        assert_eq!(serde_json::to_string(&name).unwrap(), format!("\"{text}\""));
        assert_eq!(
            serde_json::from_str::<DatasetName>(&format!("\"{text}\"")).unwrap(),
            name
        );
    }
    let err = "svhn".parse::<DatasetName>().unwrap_err().to_string();
    assert!(
        err.contains("svhn") && err.contains("fashion-mnist"),
        "{err}"
    );
    assert_eq!("test".parse::<Split>().unwrap(), Split::Test);
    assert_eq!(serde_json::to_string(&Split::Train).unwrap(), "\"train\"");
    assert!("valid".parse::<Split>().is_err());
}
