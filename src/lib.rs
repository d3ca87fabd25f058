//! # genflow
//!
//! Invertible neural networks and generative models on libtorch (through `tch`): invertible residual
//! networks (i-ResNet) with spectral normalisation, fixed-point inversion and log-determinant
//! estimators; matrix-exponential flow layers; optimisers with parameter groups; and the training,
//! evaluation and plotting around them.
//!
//! Modules depend downwards, and the command line (`src/bin/genflow`) only calls the library:
//!
//! ```text
//! bench                                      benchmarks of the models
//! tasks                                      the Task trait, the task registry, train / open runs,
//!                                            sample quality on genflow's feature networks
//! report                                     the report page of a run folder
//! config                                     run-level settings, presets, configuration documents
//! gan                                        GAN nets, losses, penalties, updates
//! train                                      the loop, checkpoints, run folders, moving averages
//! models  glann                              vector flow, image flow, classifier; GLO + IMLE
//! flows                                      Transform, the layer registry, Flow
//! nn  distributions  optim  data  plots  metrics
//! linalg  device  fs  progress  seeds  limits  error
//! ```
pub mod bench;
pub mod config;
pub mod data;
pub mod device;
pub mod distributed;
pub mod distributions;
pub mod error;
pub mod flows;
pub mod fs;
pub mod gan;
pub mod glann;
pub mod limits;
pub mod linalg;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod optim;
pub mod plots;
pub mod progress;
pub mod report;
pub mod seeds;
pub mod tasks;
pub mod train;

pub use error::{Error, Result};
pub use tch;
