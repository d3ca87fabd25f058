//! # genflow
//!
//! Invertible neural networks and generative models on libtorch (through `tch`).
pub mod error;
pub mod optim;

pub use error::{Error, Result};
pub use tch;
