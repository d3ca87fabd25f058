//! Folders of images (`.png`, `.jpg`, `.jpeg`):
//!
//! * [`read_image_folder`]: labelled images, `root/<class>/<image>.png`, the layout of
//!   torchvision's `ImageFolder`: each subfolder is a class, classes are numbered in the order of
//!   their sorted names, and images within a class are read in sorted order; all of one size;
//! * [`image_files`] and [`read_resized`]: every image below a folder (any depth, any sizes), as
//!   the unlabelled data set `dataset = "folder"` of [`super::ImageDataConfig`] reads it, each
//!   image centre-cropped to the target aspect ratio and resized to a target `[C, H, W]`.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::DynamicImage;

use super::ImageDataset;
use crate::{Error, Result};

/// The file extensions read as images (compared without regard to case).
const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Images read from a folder, with the class names their labels stand for.
#[derive(Debug)]
pub struct ImageFolder {
    /// The images, `[N, C, H, W]` with 256 levels; `C` is 1 when every image is greyscale,
    /// otherwise 3 (RGB; greyscale images are then repeated over the channels).
    pub dataset: ImageDataset,
    /// The subfolder names; label `k` is `class_names[k]`.
    pub class_names: Vec<String>,
}

/// Reads every image under `root/<class>/`. All images must have the same width and height;
/// an undecodable image, a class folder without images, or a size that differs from the first
/// image's is an error naming the file. Files with other extensions and hidden entries are
/// skipped.
pub fn read_image_folder(root: &Path) -> Result<ImageFolder> {
    let classes = sorted_entries(root, |p| p.is_dir())?;
    if classes.is_empty() {
        return Err(Error::file(
            root,
            "has no class subfolders; expected root/<class>/<image>.png",
        ));
    }
    let mut decoded: Vec<(PathBuf, DynamicImage, i64)> = Vec::new();
    let mut class_names = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let files = sorted_entries(class, is_image_file)?;
        if files.is_empty() {
            return Err(Error::file(
                class,
                "class folder has no .png/.jpg/.jpeg images",
            ));
        }
        for file in files {
            let img = image::open(&file)
                .map_err(|e| Error::file(&file, format!("cannot decode the image: {e}")))?;
            decoded.push((file, img, label as i64));
        }
        class_names.push(
            class
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
        );
    }
    let (first_path, first, _) = &decoded[0];
    let (w, h) = (first.width(), first.height());
    let channels = if decoded.iter().any(|(_, img, _)| img.color().has_color()) {
        3
    } else {
        1
    };
    let mut pixels = Vec::with_capacity(decoded.len() * (channels * w * h) as usize);
    for (path, img, _) in &decoded {
        if (img.width(), img.height()) != (w, h) {
            return Err(Error::file(
                path,
                format!(
                    "is {}x{} but {} is {w}x{h}; all images must have one size",
                    img.width(),
                    img.height(),
                    first_path.display()
                ),
            ));
        }
        push_planes(img, channels, &mut pixels);
    }
    let labels: Vec<i64> = decoded.iter().map(|(_, _, l)| *l).collect();
    let shape = [
        labels.len() as i64,
        i64::from(channels),
        i64::from(h),
        i64::from(w),
    ];
    let dataset = ImageDataset::from_bytes(&pixels, shape, &labels, 256, class_names.len())?;
    Ok(ImageFolder {
        dataset,
        class_names,
    })
}

/// Appends `img` in channel-planar `[C, H, W]` order, as 8-bit grey (`channels == 1`) or RGB.
fn push_planes(img: &DynamicImage, channels: u32, out: &mut Vec<u8>) {
    if channels == 1 {
        out.extend_from_slice(img.to_luma8().as_raw());
    } else {
        let rgb = img.to_rgb8();
        for c in 0..3 {
            out.extend(rgb.as_raw().iter().skip(c).step_by(3));
        }
    }
}

/// The non-hidden entries of `folder` that satisfy `keep`, sorted by name.
fn sorted_entries(folder: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let fail = |e: std::io::Error| Error::file(folder, format!("cannot list the folder: {e}"));
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(fail)? {
        let path = entry.map_err(fail)?.path();
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if !hidden && keep(&path) {
            entries.push(path);
        }
    }
    entries.sort();
    Ok(entries)
}

/// Whether `path` is a file with one of the image [`EXTENSIONS`].
fn is_image_file(path: &Path) -> bool {
    let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase());
    path.is_file() && ext.is_some_and(|e| EXTENSIONS.contains(&e.as_str()))
}

/// Every image file below `root` (recursively, hidden entries skipped), sorted by path. An
/// unlistable folder or one without any image is an error naming it.
pub fn image_files(root: &Path) -> Result<Vec<PathBuf>> {
    if !root.is_dir() {
        return Err(Error::file(
            root,
            "is not a folder; set data.folder to a folder of .png/.jpg/.jpeg images",
        ));
    }
    let mut files = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        folders.extend(sorted_entries(&folder, |p| p.is_dir())?);
        files.extend(sorted_entries(&folder, is_image_file)?);
    }
    if files.is_empty() {
        return Err(Error::file(
            root,
            "holds no .png/.jpg/.jpeg images (searched in every subfolder); set data.folder to a \
             folder of images",
        ));
    }
    files.sort();
    Ok(files)
}

/// Reads `files` as one unlabelled data set of `shape = [C, H, W]` (C = 1: greyscale, 3: RGB):
/// each image is centre-cropped to the aspect ratio `W / H` and resized with a triangle
/// (bilinear) filter, as torchvision's `Resize` + `CenterCrop` do. Every label is 0 (one class).
/// An undecodable file is an error naming it.
pub fn read_resized(files: &[PathBuf], shape: [i64; 3]) -> Result<ImageDataset> {
    let [c, h, w] = shape;
    if !(c == 1 || c == 3) || h < 1 || w < 1 {
        return Err(Error::config(format!(
            "data.image_size = {shape:?}: the size is [C, H, W] with C = 1 (grey) or 3 (RGB) and \
             H, W >= 1"
        )));
    }
    let (h, w) = (h as u32, w as u32);
    let mut pixels = Vec::with_capacity(files.len() * (c as u32 * h * w) as usize);
    for file in files {
        let img = image::open(file)
            .map_err(|e| Error::file(file, format!("cannot decode the image: {e}")))?;
        let (iw, ih) = (img.width(), img.height());
        // the largest centred crop of aspect w / h: width cw = min(iw, ih * w / h)
        let cw = iw.min((u64::from(ih) * u64::from(w) / u64::from(h)).max(1) as u32);
        let ch = ih.min((u64::from(iw) * u64::from(h) / u64::from(w)).max(1) as u32);
        let cropped = img.crop_imm((iw - cw) / 2, (ih - ch) / 2, cw, ch);
        let resized = cropped.resize_exact(w, h, FilterType::Triangle);
        push_planes(&resized, c as u32, &mut pixels);
    }
    let labels = vec![0i64; files.len()];
    let n = files.len() as i64;
    ImageDataset::from_bytes(&pixels, [n, c, h as i64, w as i64], &labels, 256, 1)
}
