//! `task = "classifier"`: i-ResNet classification (Behrmann et al. 2019, section 5.1): training with
//! cross-entropy, test accuracy every epoch, and the invertible feature map as an encoder
//! (`genflow encode` gives the features, `genflow decode` inverts them).

use super::classification::{accuracy, cross_entropy, intensities, Logits};
use super::image_epochs::{image_training, BatchLoss};
use super::report::InvertibilityReport;
use super::toy_density::item_convergence;
use super::{DataKind, Invertible, ItemConvergence, Task, TaskSpec, Training};
use crate::config::RunConfig;
use crate::data::{ImageDataConfig, ImageDataset};
use crate::flows::FixedPointConfig;
use crate::models::{ClassifierConfig, IResNetClassifier};
use crate::nn::ResidualNet;
use crate::seeds::{derived_seed, Stream};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Images per evaluation batch.
const EVAL_BATCH: i64 = 500;
/// Test images whose features are inverted by `genflow eval`.
const INVERTED: i64 = 64;

/// How a classifier run is evaluated: the inversion of its feature map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierEvalConfig {
    #[serde(default)]
    pub inverse: FixedPointConfig,
}

/// The configuration of a classifier run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierTaskConfig {
    pub data: ImageDataConfig,
    pub model: ClassifierConfig,
    #[serde(default)]
    pub eval: ClassifierEvalConfig,
}

impl TaskSpec for ClassifierTaskConfig {
    const OUTPUTS: &'static [&'static str] = &[];

    fn validate(&self, _run: &RunConfig) -> Result<()> {
        self.data.validate()?;
        self.model
            .validate()
            .map_err(|e| e.context("model"))
    }

    fn build(&self, run: &RunConfig, device: Device) -> Result<Box<dyn Task>> {
        let vs = VarStore::new(device);
        let model = IResNetClassifier::new(&vs.root(), &self.model)?;
        Ok(Box::new(ClassifierTask {
            config: self.clone(),
            vs,
            model,
            device,
            seed: run.seed,
        }))
    }

    /// Format 1 kept the model under `[classifier]` and carried estimator and temperature
    /// settings that a classifier never used.
    fn migrate_v1(table: &mut toml::Table) {
        if let Some(model) = table.remove("classifier") {
            table.insert("model".into(), model);
        }
        for (section, key) in [("train", "logdet"), ("eval", "logdet"), ("eval", "temperature")] {
            if let Some(toml::Value::Table(t)) = table.get_mut(section) {
                t.remove(key);
            }
        }
    }
}

/// A classifier with its configuration.
struct ClassifierTask {
    config: ClassifierTaskConfig,
    vs: VarStore,
    model: IResNetClassifier,
    device: Device,
    seed: u64,
}

/// The report of `genflow eval` on a classifier run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierReport {
    pub dataset: String,
    pub test_images: usize,
    /// Fraction of test images classified correctly.
    pub test_accuracy: f64,
    /// The feature map's inversion on the first test images.
    #[serde(flatten)]
    pub invertibility: InvertibilityReport,
}

impl Logits for IResNetClassifier {
    fn logits(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_t(x, train)
    }
}

impl BatchLoss for ClassifierTask {
    fn batch_loss(
        &self,
        images: &Tensor,
        labels: &Tensor,
        levels: u32,
        step: u64,
    ) -> Result<(Tensor, Vec<(String, f64)>)> {
        tch::manual_seed(derived_seed(self.seed, Stream::Probe, step) as i64);
        cross_entropy(&self.model, images, labels, levels, self.device)
    }

    fn test_metric(&self, test: &ImageDataset) -> Result<(&'static str, f64, f64)> {
        let acc = self.test_accuracy(test)?;
        Ok(("test_accuracy", acc, 1.0 - acc))
    }
}

impl ClassifierTask {
    fn test_accuracy(&self, test: &ImageDataset) -> Result<f64> {
        accuracy(&self.model, test, self.device, EVAL_BATCH)
    }

    /// Intensities `[n, C, H, W]` in `[0, 1]` on the model's grid of levels, on its device.
    fn model_input(&self, v: &Tensor) -> Result<Tensor> {
        let shape = self.config.model.in_shape;
        let size = v.size();
        if size.len() != 4 || size[1..] != shape {
            return Err(Error::shape(format!(
                "this classifier takes images [n, {}, {}, {}], got shape {size:?}",
                shape[0], shape[1], shape[2]
            )));
        }
        Ok(v.to_kind(Kind::Float).clamp(0.0, 1.0).to_device(self.device))
    }
}

impl Task for ClassifierTask {
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
        let accuracy = self.test_accuracy(&test)?;
        let n = INVERTED.min(test.len() as i64);
        let x = intensities(&test.images.narrow(0, 0, n), test.levels, self.device);
        let mut ctx = crate::flows::FlowContext::eval(crate::linalg::logdet::LogDetEstimator::Exact, self.seed);
        ctx.inverse = self.config.eval.inverse;
        let err = tch::no_grad(|| -> Result<f64> {
            let features = self.model.features(&x, false)?;
            let back = self.model.invert_features(&features, &mut ctx)?;
            Ok((back - &x).abs().max().double_value(&[]))
        })?;
        let report = ClassifierReport {
            dataset: self.config.data.dataset.to_string(),
            test_images: test.len(),
            test_accuracy: accuracy,
            invertibility: InvertibilityReport::new(err, n, &ctx, &self.residual_nets())?,
        };
        serde_json::to_value(report).map_err(|e| Error::config(e.to_string()))
    }

    fn residual_nets(&self) -> Vec<&ResidualNet> {
        self.model.residual_nets()
    }

    fn invertible(&self) -> Option<&dyn Invertible> {
        Some(self)
    }
}

impl Invertible for ClassifierTask {
    fn encode(&self, v: &Tensor) -> Result<Tensor> {
        let x = self.model_input(v)?;
        tch::no_grad(|| self.model.features(&x, false)).map(|f| f.to_device(Device::Cpu))
    }

    fn decode(&self, z: &Tensor) -> Result<(Tensor, Vec<ItemConvergence>)> {
        let want = self.latent_shape();
        let size = z.size();
        if size.len() != 4 || size[1..] != want {
            return Err(Error::shape(format!(
                "this classifier decodes features [n, {}, {}, {}], got shape {size:?}",
                want[0], want[1], want[2]
            )));
        }
        let mut ctx = crate::flows::FlowContext::eval(crate::linalg::logdet::LogDetEstimator::Exact, self.seed);
        ctx.inverse = self.config.eval.inverse;
        let z = z.to_kind(Kind::Float).to_device(self.device);
        let x = tch::no_grad(|| self.model.invert_features(&z, &mut ctx))?;
        Ok((x.to_device(Device::Cpu), item_convergence(&ctx, size[0])?))
    }

    fn latent_shape(&self) -> Vec<i64> {
        let shapes = self.config.model.stage_shapes().unwrap_or_default();
        shapes.last().map(|s| s.to_vec()).unwrap_or_default()
    }
}
