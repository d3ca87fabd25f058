//! Model architectures: each turns its configuration (which lives beside it) into a flow or classifier
//! built from the layer registry ([`crate::flows::build_stack`]), parameters in
//! a `VarStore`: the vector i-ResNet flow (toys, tabular), the multi-scale image flow, the i-ResNet
//! classifier, and the feature network of the sample-quality metrics.
pub mod classifier;
pub mod feature_net;
pub mod image_flow;
pub mod vector_flow;

pub use classifier::{ClassifierConfig, IResNetClassifier};
pub use feature_net::{FeatureNet, FeatureNetConfig};
pub use image_flow::{ImageFlow, ImageFlowConfig};
pub use vector_flow::{VectorFlow, VectorFlowConfig};
