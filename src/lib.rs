//! # genflow
//!
//! Invertible neural networks and generative models on libtorch (through `tch`).
pub mod data;
pub mod error;

pub use error::{Error, Result};
pub use tch;
