//! The image-folder data source (`dataset = "folder"`): every image below the folder in path
//! order, centre-cropped to the target aspect ratio and resized, the last tenth the test split;
//! the settings it needs and its errors.
use genflow::data::{DatasetName, ImageDataConfig};
use std::path::Path;

fn config(folder: &Path, size: [i64; 3]) -> ImageDataConfig {
    let text = format!(
        "dataset = \"folder\"\nfolder = \"{}\"\nimage_size = {size:?}\n",
        folder.display()
    );
    let c: ImageDataConfig = toml::from_str(&text).unwrap();
    c.validate().unwrap();
    c
}

/// An 8x4 RGB image whose outer quarters are red (left) and blue (right), the middle `shade`
/// green.
fn banded(path: &Path, shade: u8) {
    let img = image::RgbImage::from_fn(8, 4, |x, _| match x {
        0 | 1 => image::Rgb([255, 0, 0]),
        6 | 7 => image::Rgb([0, 0, 255]),
        _ => image::Rgb([0, shade, 0]),
    });
    img.save(path).unwrap();
}

#[test]
fn folders_are_read_recursively_cropped_resized_and_split() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    std::fs::create_dir_all(root.join("b/deeper")).unwrap();
    std::fs::create_dir_all(root.join("a")).unwrap();
    // 12 images in three folders, plus files that are not images
    for i in 0..4u8 {
        banded(&root.join(format!("a/{i}.png")), 10 + i);
        banded(&root.join(format!("b/{i}.png")), 20 + i);
        banded(&root.join(format!("b/deeper/{i}.png")), 30 + i);
    }
    std::fs::write(root.join("a/notes.txt"), "not an image").unwrap();
    std::fs::write(root.join("b/.hidden.png"), "hidden").unwrap();

    let data = config(&root, [3, 4, 4]);
    let (train, test) = (data.load_train().unwrap(), data.load_test().unwrap());
    assert_eq!((train.len(), test.len()), (11, 1));
    assert_eq!(train.shape(), [3, 4, 4]);
    assert_eq!((train.levels, train.classes), (256, 1));
    // the square centre crop of the 8x4 image is its green middle, whatever the shade
    let first = train.images.get(0);
    let red = first.get(0).sum(tch::Kind::Int64).int64_value(&[]);
    let blue = first.get(2).sum(tch::Kind::Int64).int64_value(&[]);
    assert_eq!((red, blue), (0, 0));
    // path order: a/0..3, b/0..3, b/deeper/0..3 (so the test image is b/deeper/3.png)
    let greens: Vec<i64> = (0..11)
        .map(|i| train.images.int64_value(&[i, 1, 0, 0]))
        .collect();
    assert_eq!(greens, [10, 11, 12, 13, 20, 21, 22, 23, 30, 31, 32]);
    assert_eq!(test.images.int64_value(&[0, 1, 2, 2]), 33);

    // greyscale, and a wide target keeps the whole width
    let grey = config(&root, [1, 2, 4]).load_test().unwrap();
    assert_eq!(grey.shape(), [1, 2, 4]);
    let wide = config(&root, [3, 4, 8]).load_test().unwrap();
    assert_eq!(wide.images.int64_value(&[0, 0, 0, 0]), 255, "red band kept");
    assert_eq!(
        wide.images.int64_value(&[0, 2, 3, 7]),
        255,
        "blue band kept"
    );
}

#[test]
fn folder_settings_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let parse = |text: &str| toml::from_str::<ImageDataConfig>(text).unwrap().validate();
    let err = parse("dataset = \"folder\"\nimage_size = [3, 8, 8]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("data.folder"), "{err}");
    let err = parse("dataset = \"mnist\"\nfolder = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("data.folder") && err.contains("\"folder\""),
        "{err}"
    );
    let err = parse("dataset = \"folder\"\nfolder = \"x\"\nimage_size = [2, 8, 8]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("data.image_size"), "{err}");

    let missing = dir.path().join("nowhere");
    let err = config(&missing, [3, 4, 4])
        .load_train()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nowhere") && err.contains("not a folder"),
        "{err}"
    );
    let one = dir.path().join("one");
    std::fs::create_dir_all(&one).unwrap();
    banded(&one.join("x.png"), 1);
    let err = config(&one, [3, 4, 4])
        .load_train()
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least 2"), "{err}");
    // a folder cannot be installed
    let err = genflow::data::install(DatasetName::Folder, dir.path(), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("data.folder"), "{err}");
}
