//! # genflow
//!
//! Invertible neural networks and generative models on libtorch (through `tch`).
pub mod error;

pub use error::{Error, Result};
pub use tch;
