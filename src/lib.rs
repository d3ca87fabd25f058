//! # genflow
//!
//! Invertible neural networks and generative models on libtorch (through `tch`): invertible residual
//! networks (i-ResNet) with spectral normalisation, fixed-point inversion and log-determinant
//! estimators; matrix-exponential flow layers; optimisers with parameter groups; and the training,
//! evaluation and plotting around them.
//!
//! Modules depend downwards: `linalg` <- `nn` <- `flows` <- `models` <- `train` <- `apps` <- CLI.
pub mod apps;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod device;
pub mod distributed;
pub mod distributions;
pub mod error;
pub mod flows;
pub mod linalg;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod optim;
pub mod plots;
pub mod train;

pub use error::{Error, Result};
pub use tch;
