//! # genflow
//!
//! Invertible neural networks and generative models on libtorch (through `tch`).
pub mod bench;
pub mod distributions;
pub mod error;
pub mod flows;
pub mod linalg;
pub mod nn;

pub use error::{Error, Result};
pub use tch;
