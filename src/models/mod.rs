//! Complete models built from the flows: the image density model and the i-ResNet classifier.
pub mod classifier;
pub mod image_flow;

pub use classifier::{ClassifierConfig, IResNetClassifier};
pub use image_flow::{BaseKind, ImageFlow, ImageFlowConfig};
