//! The image data set type, its names and splits, loading from the data folder, and batching.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::{cifar, digits, folder, idx};
use crate::{Error, Result};

/// The image data sets genflow knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DatasetName {
    /// MNIST handwritten digits: 60000 train + 10000 test, 1x28x28, 10 classes.
    #[serde(rename = "mnist")]
    Mnist,
    /// Fashion-MNIST clothing images: 60000 train + 10000 test, 1x28x28, 10 classes.
    #[serde(rename = "fashion-mnist")]
    FashionMnist,
    /// The UCI optical digits of scikit-learn: 1797 images, 1x8x8, 17 grey levels, 10 classes.
    #[serde(rename = "digits")]
    Digits,
    /// CIFAR-10 in its binary version: 50000 train + 10000 test, 3x32x32, 10 classes.
    #[serde(rename = "cifar10")]
    Cifar10,
    /// A folder of one's own images (any depth, any sizes), unlabelled, cropped and resized to
    /// one size: [`ImageDataConfig`]'s `folder` and `image_size` say which and how big.
    #[serde(rename = "folder")]
    Folder,
}

impl DatasetName {
    /// Every name, in a fixed order.
    pub const ALL: [DatasetName; 5] = [
        Self::Mnist,
        Self::FashionMnist,
        Self::Digits,
        Self::Cifar10,
        Self::Folder,
    ];

    /// The name as written on the command line and in configuration files; also the name of the
    /// data set's folder under the data directory.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mnist => "mnist",
            Self::FashionMnist => "fashion-mnist",
            Self::Digits => "digits",
            Self::Cifar10 => "cifar10",
            Self::Folder => "folder",
        }
    }

    /// The grey levels a pixel takes: 17 for digits (values 0..=16), 256 otherwise.
    pub fn levels(self) -> u32 {
        match self {
            Self::Digits => crate::data::digits::LEVELS,
            _ => 256,
        }
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DatasetName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|d| d.as_str()).collect();
                Error::config(format!(
                    "unknown data set `{s}`; expected one of: {}",
                    names.join(", ")
                ))
            })
    }
}

/// The part of a data set: training or test images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The training images.
    Train,
    /// The held-out test images.
    Test,
}

impl Split {
    /// Both splits, train first.
    pub const ALL: [Split; 2] = [Split::Train, Split::Test];
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

impl FromStr for Split {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(Split::Train),
            "test" => Ok(Split::Test),
            _ => Err(Error::config(format!(
                "unknown split `{s}`; expected `train` or `test`"
            ))),
        }
    }
}

/// Labelled images held in memory on the CPU.
#[derive(Debug)]
pub struct ImageDataset {
    /// Pixel values, `u8` of shape `[N, C, H, W]`, each in `0..levels`.
    pub images: Tensor,
    /// Class labels, `i64` of shape `[N]`, each in `0..classes`.
    pub labels: Tensor,
    /// The number of grey levels a pixel can take: 256, or 17 for digits (values 0..=16).
    pub levels: u32,
    /// The number of classes.
    pub classes: usize,
}

impl ImageDataset {
    /// Checks and wraps `images` (`u8 [N, C, H, W]`) and `labels` (`i64 [N]`, in `0..classes`),
    /// with pixels in `0..levels` (`2 <= levels <= 256`).
    pub fn new(images: Tensor, labels: Tensor, levels: u32, classes: usize) -> Result<Self> {
        if images.kind() != Kind::Uint8 || images.dim() != 4 {
            return Err(Error::shape(format!(
                "images must be u8 [N, C, H, W], got {:?} {:?}",
                images.kind(),
                images.size()
            )));
        }
        let n = images.size()[0];
        if labels.kind() != Kind::Int64 || labels.size() != [n] {
            return Err(Error::shape(format!(
                "labels must be i64 [{n}] to match {n} images, got {:?} {:?}",
                labels.kind(),
                labels.size()
            )));
        }
        if !(2..=256).contains(&levels) || classes == 0 {
            return Err(Error::config(format!(
                "levels must be in 2..=256 and classes at least 1, got levels {levels}, classes {classes}"
            )));
        }
        if n > 0 {
            let (lo, hi) = (
                labels.f_min()?.int64_value(&[]),
                labels.f_max()?.int64_value(&[]),
            );
            if lo < 0 || hi >= classes as i64 {
                return Err(Error::config(format!(
                    "labels span {lo}..={hi}, outside the {classes} classes 0..{classes}"
                )));
            }
            let top = images.f_max()?.int64_value(&[]);
            if top >= i64::from(levels) {
                return Err(Error::config(format!(
                    "pixel value {top} is outside the {levels} levels 0..{levels}"
                )));
            }
        }
        Ok(Self {
            images,
            labels,
            levels,
            classes,
        })
    }

    /// Builds a data set from row-major pixel bytes of `shape = [N, C, H, W]` and one label per
    /// image; used by the file readers after they checked the file's own layout.
    pub(crate) fn from_bytes(
        pixels: &[u8],
        shape: [i64; 4],
        labels: &[i64],
        levels: u32,
        classes: usize,
    ) -> Result<Self> {
        let images = Tensor::f_from_data_size(pixels, &shape, Kind::Uint8)?;
        Self::new(images, Tensor::f_from_slice(labels)?, levels, classes)
    }

    /// The number of images `N`.
    pub fn len(&self) -> usize {
        self.images.size()[0] as usize
    }

    /// Whether the data set holds no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shape `[C, H, W]` of one image.
    pub fn shape(&self) -> [i64; 3] {
        let s = self.images.size();
        [s[1], s[2], s[3]]
    }

    /// The labels as a vector, in order.
    pub fn label_vec(&self) -> Result<Vec<i64>> {
        Ok(Vec::<i64>::try_from(&self.labels)?)
    }

    /// The number of images of each class `0..classes`.
    pub fn class_counts(&self) -> Result<Vec<usize>> {
        let mut counts = vec![0; self.classes];
        for label in self.label_vec()? {
            counts[label as usize] += 1;
        }
        Ok(counts)
    }

    /// The first `n` images (a view sharing memory with `self`); an error unless `1 <= n <= len`.
    pub fn subset(&self, n: usize) -> Result<ImageDataset> {
        if n == 0 || n > self.len() {
            return Err(Error::config(format!(
                "subset size {n} must be between 1 and the data set's {} images",
                self.len()
            )));
        }
        self.range(0, n)
    }

    /// Images `start..start + n` (a view sharing memory with `self`).
    fn range(&self, start: usize, n: usize) -> Result<ImageDataset> {
        let (start, n) = (start as i64, n as i64);
        Ok(ImageDataset {
            images: self.images.f_narrow(0, start, n)?,
            labels: self.labels.f_narrow(0, start, n)?,
            levels: self.levels,
            classes: self.classes,
        })
    }

    /// Mini-batches `(images u8 [B, C, H, W], labels i64 [B])` covering every image once.
    ///
    /// Without a seed the batches follow the stored order; with `Some(seed)` the order is a
    /// uniform random permutation drawn from `rand`'s `StdRng` seeded with `seed`, so the same
    /// seed gives the same batches. Every batch has `batch_size` images except possibly the last,
    /// which holds the remainder. `batch_size` must be at least 1.
    ///
    /// ```
    /// use genflow::data::ImageDataset;
    /// use genflow::tch::{Kind, Tensor};
    /// let data = ImageDataset::new(
    ///     Tensor::zeros([5, 1, 2, 2], (Kind::Uint8, tch::Device::Cpu)),
    ///     Tensor::from_slice(&[0i64, 1, 0, 1, 0]),
    ///     256,
    ///     2,
    /// )?;
    /// let sizes: Vec<i64> = data.batches(2, Some(7))?.map(|(x, _)| x.size()[0]).collect();
    /// assert_eq!(sizes, [2, 2, 1]);
    /// # Ok::<(), genflow::Error>(())
    /// ```
    pub fn batches(&self, batch_size: usize, shuffle_seed: Option<u64>) -> Result<Batches<'_>> {
        if batch_size == 0 {
            return Err(Error::config("batch size must be at least 1"));
        }
        let order = shuffle_seed
            .map(|seed| {
                let mut order: Vec<i64> = (0..self.len() as i64).collect();
                order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
                Tensor::f_from_slice(&order)
            })
            .transpose()?;
        Ok(Batches {
            data: self,
            order,
            batch_size,
            next: 0,
        })
    }

    /// The images and labels of training step `step` with batches of `batch_size`: epoch
    /// `step / steps_per_epoch` visits the images in an order drawn from `seed` and the epoch
    /// ([`crate::seeds::Stream::Data`]), so a resumed run sees exactly what the uninterrupted one
    /// would. The last batch of an epoch holds the remainder.
    pub fn epoch_batch(&self, seed: u64, step: u64, batch_size: usize) -> Result<(Tensor, Tensor)> {
        let idx = epoch_index(self.len(), seed, step, batch_size)?;
        Ok((
            self.images.f_index_select(0, &idx)?,
            self.labels.f_index_select(0, &idx)?,
        ))
    }
}

/// The indices (`i64`) of the items of training step `step` over a data set of `n` items with
/// batches of `batch_size`, in the order of [`ImageDataset::epoch_batch`] (which takes these
/// items): for objectives that need to know which items a batch holds (GLO's codes, say).
///
/// ```
/// let first = genflow::data::epoch_index(10, 7, 0, 4)?;
/// let last = genflow::data::epoch_index(10, 7, 2, 4)?;      // the remainder of epoch 0
/// assert_eq!((first.size(), last.size()), (vec![4], vec![2]));
/// # Ok::<(), genflow::Error>(())
/// ```
pub fn epoch_index(n: usize, seed: u64, step: u64, batch_size: usize) -> Result<Tensor> {
    if batch_size == 0 || n == 0 {
        return Err(Error::config(format!(
            "cannot draw batches of {batch_size} from a data set of {n} items"
        )));
    }
    let per_epoch = n.div_ceil(batch_size) as u64;
    let (epoch, index) = (step / per_epoch, (step % per_epoch) as usize);
    let mut order: Vec<i64> = (0..n as i64).collect();
    let epoch_seed = crate::seeds::derived_seed(seed, crate::seeds::Stream::Data, epoch);
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(epoch_seed));
    let start = index * batch_size;
    Ok(Tensor::f_from_slice(
        &order[start..(start + batch_size).min(n)],
    )?)
}

/// The iterator returned by [`ImageDataset::batches`].
#[derive(Debug)]
pub struct Batches<'a> {
    data: &'a ImageDataset,
    /// The shuffled image indices, or `None` for the stored order.
    order: Option<Tensor>,
    batch_size: usize,
    next: usize,
}

impl Iterator for Batches<'_> {
    type Item = (Tensor, Tensor);

    fn next(&mut self) -> Option<Self::Item> {
        let len = self.data.len();
        if self.next >= len {
            return None;
        }
        let n = self.batch_size.min(len - self.next) as i64;
        let start = self.next as i64;
        self.next += n as usize;
        // Indices below come from 0..len, so these libtorch calls cannot fail.
        Some(match &self.order {
            None => (
                self.data.images.narrow(0, start, n),
                self.data.labels.narrow(0, start, n),
            ),
            Some(order) => {
                let index = order.narrow(0, start, n);
                (
                    self.data.images.index_select(0, &index),
                    self.data.labels.index_select(0, &index),
                )
            }
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.data.len() - self.next.min(self.data.len())).div_ceil(self.batch_size);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Batches<'_> {}

/// The number of digits images that form the training split; the remaining 297 of the 1797 are
/// the test split. The split follows the file's order, so it is the same everywhere.
pub const DIGITS_TRAIN: usize = 1500;

/// The data directory: `$GENFLOW_DATA` when set, else `~/.cache/genflow/data` (from `$HOME`),
/// else `genflow-data` in the current folder when there is no home folder.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GENFLOW_DATA") {
        return PathBuf::from(dir);
    }
    match std::env::var_os("HOME") {
        Some(home) => Path::new(&home).join(".cache").join("genflow").join("data"),
        None => PathBuf::from("genflow-data"),
    }
}

/// The IDX file names of a split of MNIST or Fashion-MNIST: `(images, labels)`.
pub(crate) fn idx_names(split: Split) -> (&'static str, &'static str) {
    match split {
        Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
}

/// The name of the digits file inside the data set's folder.
pub(crate) const DIGITS_FILE: &str = "digits.csv.gz";

/// Loads split `split` of data set `name` from its folder `dir/<name>` (see
/// [`install`](mod@super::install) for the layout it writes).
///
/// MNIST and Fashion-MNIST are read from the IDX files (raw or gzipped), digits from
/// `digits.csv.gz` split by [`DIGITS_TRAIN`], CIFAR-10 from the binary batches
/// `data_batch_{1..5}.bin` / `test_batch.bin`. A missing file is an error that says how to
/// install it.
pub fn load(name: DatasetName, split: Split, dir: &Path) -> Result<ImageDataset> {
    let folder = dir.join(name.as_str());
    match name {
        DatasetName::Mnist | DatasetName::FashionMnist => {
            let (images, labels) = idx_names(split);
            let images = existing(name, &folder, images)?;
            let labels = existing(name, &folder, labels)?;
            idx::read_idx_dataset(&images, &labels, 10)
        }
        DatasetName::Digits => {
            let all = digits::read_digits_csv(&existing(name, &folder, DIGITS_FILE)?)?;
            let train = DIGITS_TRAIN.min(all.len());
            match split {
                Split::Train => all.range(0, train),
                Split::Test => all.range(train, all.len() - train),
            }
        }
        DatasetName::Cifar10 => {
            let files: Vec<PathBuf> = cifar::batch_names(split)
                .iter()
                .map(|f| existing(name, &folder, f))
                .collect::<Result<_>>()?;
            cifar::read_cifar10_batches(&files)
        }
        DatasetName::Folder => Err(Error::config(
            "a folder of images is read through a run's [data] (dataset = \"folder\", folder = \
             \"PATH\", image_size = [C, H, W]), not from the data directory",
        )),
    }
}

/// `folder/file`, or `folder/file.gz`, whichever exists; else an error saying how to install it.
fn existing(name: DatasetName, folder: &Path, file: &str) -> Result<PathBuf> {
    let path = folder.join(file);
    let gz = folder.join(format!("{file}.gz"));
    match (path.is_file(), gz.is_file()) {
        (true, _) => Ok(path),
        (false, true) => Ok(gz),
        (false, false) if name == DatasetName::Cifar10 => Err(Error::file(
            path,
            "is missing: no package registry carries CIFAR-10; put the binary batches \
             (data_batch_1.bin .. data_batch_5.bin, test_batch.bin of cifar-10-binary.tar.gz) \
             in this folder",
        )),
        (false, false) => Err(Error::file(
            path,
            format!(
                "is missing: run `genflow data install {name}` (or `genflow data install {name} \
                 --from FOLDER` with files you already have)"
            ),
        )),
    }
}

/// The data of an image run (`[data]` of the image tasks).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDataConfig {
    /// The data set.
    pub dataset: DatasetName,
    /// The data folder (default: `$GENFLOW_DATA` or `~/.cache/genflow/data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Train on the first this many training images only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_subset: Option<usize>,
    /// Test images used by the evaluations during training (default: all); `genflow eval` uses
    /// the whole test split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_size: Option<usize>,
    /// `dataset = "folder"`: the folder whose images (`.png`, `.jpg`, `.jpeg` at any depth,
    /// sorted by path) form the data set; the last tenth of them is the test split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<PathBuf>,
    /// `dataset = "folder"`: `[C, H, W]` (C = 1 grey, 3 RGB) every image is centre-cropped to
    /// the aspect ratio of and resized to ([`folder::read_resized`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<[i64; 3]>,
}

/// One in this many images of a folder data set (its last ones in path order) is a test image.
pub const FOLDER_TEST_EVERY: usize = 10;

impl ImageDataConfig {
    /// Checks the sizes, and that `folder` and `image_size` are set exactly for
    /// `dataset = "folder"`.
    pub fn validate(&self) -> Result<()> {
        for (key, v) in [
            ("data.test_size", self.test_size),
            ("data.train_subset", self.train_subset),
        ] {
            if v == Some(0) {
                return Err(Error::config(format!("{key} must be positive, got 0")));
            }
        }
        let is_folder = self.dataset == DatasetName::Folder;
        for (key, set) in [
            ("data.folder", self.folder.is_some()),
            ("data.image_size", self.image_size.is_some()),
        ] {
            if set != is_folder {
                return Err(Error::config(if is_folder {
                    format!("dataset = \"folder\" needs {key} (folder = \"PATH\", image_size = [C, H, W])")
                } else {
                    format!(
                        "{key} is only read with dataset = \"folder\"; remove it or set \
                         data.dataset = \"folder\""
                    )
                }));
            }
        }
        match self.image_size {
            Some([c, h, w]) if !((c == 1 || c == 3) && h >= 1 && w >= 1) => {
                Err(Error::config(format!(
                    "data.image_size = [{c}, {h}, {w}]: expected [C, H, W] with C = 1 (grey) or \
                     3 (RGB) and H, W >= 1"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The shape `[C, H, W]` of the images when the configuration alone tells it (a folder's
    /// target size), for checks before any file is read.
    pub fn configured_shape(&self) -> Option<[i64; 3]> {
        self.image_size
    }

    /// The data folder.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(default_data_dir)
    }

    /// The training images (the first `train_subset` of them when set).
    pub fn load_train(&self) -> Result<ImageDataset> {
        let train = self.load_split(Split::Train)?;
        match self.train_subset {
            Some(n) => train.subset(n.min(train.len())),
            None => Ok(train),
        }
    }

    /// The whole test split.
    pub fn load_test(&self) -> Result<ImageDataset> {
        self.load_split(Split::Test)
    }

    /// A split from the data directory, or from the folder of `dataset = "folder"`: its files in
    /// path order, of which the last `1 / FOLDER_TEST_EVERY` (at least one) are the test split.
    fn load_split(&self, split: Split) -> Result<ImageDataset> {
        let (Some(root), Some(shape)) = (&self.folder, self.image_size) else {
            return load(self.dataset, split, &self.data_dir());
        };
        let files = folder::image_files(root)?;
        if files.len() < 2 {
            return Err(Error::file(
                root,
                "holds one image; a folder data set needs at least 2 (training and test images)",
            ));
        }
        let n_test = (files.len() / FOLDER_TEST_EVERY).max(1);
        let (train, test) = files.split_at(files.len() - n_test);
        folder::read_resized(if split == Split::Train { train } else { test }, shape)
    }

    /// The first `test_size` images of `test` (all when unset), for evaluations during training.
    pub fn evaluation_subset(&self, test: ImageDataset) -> Result<ImageDataset> {
        match self.test_size {
            Some(n) => test.subset(n.min(test.len())),
            None => Ok(test),
        }
    }
}
