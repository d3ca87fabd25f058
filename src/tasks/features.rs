//! `task = "feature-classifier"`: the small CNN classifier whose penultimate layer is the feature
//! space of genflow's sample-quality metrics ([`crate::models::FeatureNet`];
//! [`super::quality`] trains and caches one per data set when a metric needs it).

use super::classification::{accuracy, cross_entropy, Logits};
use super::image_epochs::{image_training, BatchLoss};
use super::{DataKind, Task, TaskSpec, Training};
use crate::config::RunConfig;
use crate::data::{ImageDataConfig, ImageDataset};
use crate::models::{FeatureNet, FeatureNetConfig};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Images per evaluation batch.
const EVAL_BATCH: i64 = 500;

/// The configuration of a feature-classifier run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureClassifierConfig {
    pub data: ImageDataConfig,
    pub model: FeatureNetConfig,
}

impl TaskSpec for FeatureClassifierConfig {
    const OUTPUTS: &'static [&'static str] = &[];

    fn validate(&self, _run: &RunConfig) -> Result<()> {
        self.data.validate()?;
        self.model.validate()
    }

    fn build(&self, _run: &RunConfig, device: Device) -> Result<Box<dyn Task>> {
        let vs = VarStore::new(device);
        let model = FeatureNet::new(&vs.root(), &self.model)?;
        Ok(Box::new(FeatureClassifier {
            config: self.clone(),
            vs,
            model,
            device,
        }))
    }
}

/// A feature network with its configuration.
struct FeatureClassifier {
    config: FeatureClassifierConfig,
    vs: VarStore,
    model: FeatureNet,
    device: Device,
}

/// The report of `genflow eval` on a feature-classifier run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureClassifierReport {
    pub dataset: String,
    pub test_images: usize,
    /// Fraction of test images classified correctly.
    pub test_accuracy: f64,
    /// Dimension of the feature space.
    pub features: i64,
}

/// A trained classifier as the sample-quality metrics use it.
pub trait ImageFeatures {
    /// Features `[n, d]` (on the CPU) of intensities `[n, C, H, W]` in `[0, 1]`, in batches.
    fn features(&self, images: &Tensor) -> Result<Tensor>;
    /// Predicted classes `[n]` (int64, on the CPU) of intensities `[n, C, H, W]`.
    fn classify(&self, images: &Tensor) -> Result<Tensor>;
}

impl Logits for FeatureNet {
    fn logits(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        FeatureNet::logits(self, x, train)
    }
}

impl BatchLoss for FeatureClassifier {
    fn batch_loss(
        &self,
        images: &Tensor,
        labels: &Tensor,
        levels: u32,
        _step: u64,
    ) -> Result<(Tensor, Vec<(String, f64)>)> {
        cross_entropy(&self.model, images, labels, levels, self.device)
    }

    fn test_metric(&self, test: &ImageDataset) -> Result<(&'static str, f64, f64)> {
        let acc = accuracy(&self.model, test, self.device, EVAL_BATCH)?;
        Ok(("test_accuracy", acc, 1.0 - acc))
    }
}

impl FeatureClassifier {
    /// `f` applied to intensities in batches (no graph, evaluation mode), results on the CPU.
    fn batched(&self, images: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        let shape = self.config.model.in_shape;
        let size = images.size();
        if size.len() != 4 || size[1..] != shape {
            return Err(Error::shape(format!(
                "the {} feature network takes images [n, {}, {}, {}], got {size:?}",
                self.config.data.dataset, shape[0], shape[1], shape[2]
            )));
        }
        let _guard = tch::no_grad_guard();
        let out = images
            .split(EVAL_BATCH, 0)
            .iter()
            .map(|chunk| f(&chunk.to_kind(Kind::Float).to_device(self.device)).map(|t| t.to_device(Device::Cpu)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&out, 0))
    }
}

impl ImageFeatures for FeatureClassifier {
    fn features(&self, images: &Tensor) -> Result<Tensor> {
        self.batched(images, |x| self.model.features(x, false))
    }

    fn classify(&self, images: &Tensor) -> Result<Tensor> {
        self.batched(images, |x| Ok(self.model.logits(x, false)?.argmax(-1, false)))
    }
}

impl Task for FeatureClassifier {
    fn vars(&self) -> &VarStore {
        &self.vs
    }

    fn data_kind(&self) -> DataKind {
        DataKind::Images {
            shape: self.config.model.in_shape,
            levels: self.config.data.dataset.levels(),
        }
    }

    fn training(&self, run: &RunConfig) -> Result<Training<'_>> {
        image_training(self, &self.config.data, self.config.model.in_shape, run)
    }

    fn write_pictures(&self, _run: &RunConfig, out_dir: &Path) -> Result<()> {
        super::write_curves(out_dir)
    }

    fn evaluate(&self, _run: &RunConfig) -> Result<serde_json::Value> {
        let test = self.config.data.load_test()?;
        let report = FeatureClassifierReport {
            dataset: self.config.data.dataset.to_string(),
            test_images: test.len(),
            test_accuracy: accuracy(&self.model, &test, self.device, EVAL_BATCH)?,
            features: self.config.model.features,
        };
        serde_json::to_value(report).map_err(|e| Error::config(e.to_string()))
    }

    fn image_features(&self) -> Option<&dyn ImageFeatures> {
        Some(self)
    }
}
