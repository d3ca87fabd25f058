//! Sample quality of generated images on genflow's own feature networks (SPEC section 6): the
//! Frechet distance, KID and precision/recall ([`crate::metrics`]) between the features of
//! generated images and of a data set's test split, so that flows, GANs, O-GAN and GLANN are
//! compared on one scale without downloaded Inception weights.
//!
//! The features are the penultimate layer of a small CNN classifier (`task =
//! "feature-classifier"`, presets `features-mnist` and `features-fashion-mnist`). When a metric
//! needs the feature network of a data set and none is cached, genflow trains it once (with the
//! preset's fixed seed, a progress bar) into `<data dir>/<data set>/feature-net`, and every report
//! names the network's checkpoint and its SHA-256: numbers from two machines are comparable only
//! when they name the same network.

use super::features::ImageFeatures;
use super::run::{Run, TrainOptions};
use super::JobConfig;
use crate::config::{ConfigDocument, PRESETS};
use crate::data::{ImageDataConfig, ImageDataset};
use crate::metrics::{frechet_distance, kid, precision_recall, KidOptions};
use crate::train::{Weights, CHECKPOINT_FILE};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Generated images the metrics use by default.
pub const DEFAULT_SAMPLES: i64 = 10_000;
/// The folder, inside a data set's folder, of its cached feature network.
pub const FEATURE_NET_DIR: &str = "feature-net";

/// The sample-quality numbers of a set of generated images against a reference set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityReport {
    /// Frechet distance of the feature statistics.
    pub fd: f64,
    /// KID: mean and standard deviation of the unbiased MMD^2 over subsets.
    pub kid_mean: f64,
    pub kid_std: f64,
    /// Precision and recall of the k = 3 nearest-neighbour manifolds (on equal numbers of
    /// generated and reference images).
    pub precision: f64,
    pub recall: f64,
    /// Generated images compared.
    pub quality_samples: usize,
    /// The reference set (`mnist:test`) and its size.
    pub quality_reference: String,
    pub quality_reference_images: usize,
    /// The feature network's checkpoint and its SHA-256.
    pub feature_net: String,
    pub feature_net_sha256: String,
}

/// A trained feature network, identified by its checkpoint file and that file's SHA-256.
pub struct FeatureNetwork {
    run: Run,
    file: PathBuf,
    sha256: String,
}

impl FeatureNetwork {
    /// The feature network of run folder `dir` (a `feature-classifier` run).
    pub fn open(dir: &Path, device: Device) -> Result<Self> {
        let run = Run::open(dir, device, Weights::Averaged)?;
        if run.task().image_features().is_none() {
            return Err(Error::file(
                dir,
                format!(
                    "is a {} run, not a feature network (task = \"feature-classifier\")",
                    run.job.task.name()
                ),
            ));
        }
        let file = dir.join(CHECKPOINT_FILE);
        let bytes = std::fs::read(&file).map_err(|e| Error::file(&file, e.to_string()))?;
        Ok(FeatureNetwork {
            run,
            sha256: crate::data::sha256_hex(&bytes),
            file,
        })
    }

    /// The cached feature network of `data`'s data set, trained first when there is none
    /// (`features-<data set>` preset, or `features-mnist`'s recipe adapted to the data's shape).
    pub fn for_data(data: &ImageDataConfig, device: Device) -> Result<Self> {
        let dir = data
            .data_dir()
            .join(data.dataset.as_str())
            .join(FEATURE_NET_DIR);
        if !dir.join(CHECKPOINT_FILE).exists() {
            // trained beside the cache and moved in once finished: an interrupted training never
            // leaves a half-trained network where the metrics would take it for the real one
            let partial = dir.with_extension("partial");
            let job = feature_job(data)?;
            tracing::info!(
                "training the {} feature network once, into {} (the metrics reuse it)",
                data.dataset,
                dir.display()
            );
            let options = TrainOptions {
                force: true,
                device: Some(device),
                ..Default::default()
            };
            super::train(&job, &partial, &options)?;
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| Error::file(&dir, e.to_string()))?;
            }
            std::fs::rename(&partial, &dir).map_err(|e| Error::file(&dir, e.to_string()))?;
        }
        Self::open(&dir, device)
    }

    fn net(&self) -> Result<&dyn ImageFeatures> {
        self.run
            .task()
            .image_features()
            .ok_or_else(|| Error::file(&self.file, "is not the checkpoint of a feature network"))
    }

    /// Features `[n, d]` of intensities `[n, C, H, W]` in `[0, 1]`.
    pub fn features(&self, images: &Tensor) -> Result<Tensor> {
        self.net()?.features(images)
    }

    /// Predicted classes `[n]` of intensities `[n, C, H, W]`.
    pub fn classify(&self, images: &Tensor) -> Result<Tensor> {
        self.net()?.classify(images)
    }

    /// The checkpoint file and its SHA-256.
    pub fn identity(&self) -> (&Path, &str) {
        (&self.file, &self.sha256)
    }
}

/// The job that trains the feature network of `data`: the data set's preset when it has one,
/// else `features-mnist` with the data set, its image shape and its number of classes.
fn feature_job(data: &ImageDataConfig) -> Result<JobConfig> {
    let name = format!("features-{}", data.dataset);
    let dir = format!("data.dir=\"{}\"", data.data_dir().display());
    if PRESETS.iter().any(|p| p.name == name) {
        return JobConfig::resolve(&name, &[dir]);
    }
    let test = data.load_test()?;
    let [c, h, w] = test.shape();
    let overrides = [
        dir,
        format!("data.dataset=\"{}\"", data.dataset),
        format!("model.in_shape=[{c}, {h}, {w}]"),
        format!("model.num_classes={}", test.classes.max(2)),
    ];
    JobConfig::from_document(&ConfigDocument::load("features-mnist", &overrides)?)
}

/// Intensities `[n, C, H, W]` in `[0, 1]` of a data set's images.
pub fn intensities(data: &ImageDataset) -> Tensor {
    data.images.to_kind(Kind::Float) / (f64::from(data.levels) - 1.0)
}

/// FD, KID and precision/recall of `samples` against `reference` (intensities), on `net`.
/// Precision and recall use the first `min(n_samples, n_reference)` of each.
pub fn compare(
    samples: &Tensor,
    reference: &Tensor,
    reference_name: &str,
    net: &FeatureNetwork,
    kid_options: &KidOptions,
) -> Result<QualityReport> {
    let generated = net.features(samples)?;
    let real = net.features(reference)?;
    let (n_gen, n_real) = (generated.size()[0], real.size()[0]);
    let fd = frechet_distance(&generated, &real)?;
    let kid = kid(&generated, &real, kid_options)?;
    let m = n_gen.min(n_real);
    let pr = precision_recall(&real.narrow(0, 0, m), &generated.narrow(0, 0, m))?;
    let (file, sha) = net.identity();
    Ok(QualityReport {
        fd: fd.fd,
        kid_mean: kid.mean,
        kid_std: kid.std,
        precision: pr.precision,
        recall: pr.recall,
        quality_samples: n_gen as usize,
        quality_reference: reference_name.to_string(),
        quality_reference_images: n_real as usize,
        feature_net: file.display().to_string(),
        feature_net_sha256: sha.to_string(),
    })
}

/// Sample quality of generated images (intensities) against the test split of `data`, on its
/// feature network (`feature_net`: a feature-classifier run folder to use instead of the cached
/// one).
pub fn image_quality(
    samples: &Tensor,
    data: &ImageDataConfig,
    feature_net: Option<&Path>,
    device: Device,
) -> Result<QualityReport> {
    let net = match feature_net {
        Some(dir) => FeatureNetwork::open(dir, device)?,
        None => FeatureNetwork::for_data(data, device)?,
    };
    let test = data.load_test()?;
    let name = format!("{}:test", data.dataset);
    compare(
        samples,
        &intensities(&test),
        &name,
        &net,
        &KidOptions::default(),
    )
}
