//! `genflow eval`: a run's own evaluation report, with the sample-quality metrics of models that
//! generate images added (kept apart from [`Run`]'s file so that opening runs, which the feature
//! networks of [`super::quality`] do, and evaluating with them do not depend on each other).

use super::quality;
use super::run::Run;
use super::{InvertibilityReport, SampleOptions};
use crate::{Error, Result};
use std::path::PathBuf;

/// What `genflow eval` computes besides the task's own report.
#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    /// Samples drawn for the sample-quality metrics of models that generate images (FD, KID,
    /// precision/recall); `None`: [`quality::DEFAULT_SAMPLES`], `Some(0)`: none.
    pub samples: Option<i64>,
    /// A feature-classifier run to use instead of the data set's cached feature network.
    pub feature_net: Option<PathBuf>,
    /// Make an inverse that did not converge, or a block with `Lip(g) >= 1`, an error instead of
    /// a warning.
    pub strict: bool,
}

impl Run {
    /// The task's evaluation report and, for models that generate images, the sample-quality
    /// metrics of `options.samples` samples against the test split ([`quality::QualityReport`]'s
    /// keys added to the report); for each of the task's baseline samplers `NAME` as many samples
    /// again, reported as `fd_NAME`, `kid_NAME` (the mean), `kid_std_NAME`, `precision_NAME` and
    /// `recall_NAME`.
    pub fn evaluate_with(&self, options: &EvalOptions) -> Result<serde_json::Value> {
        let mut report = self.evaluate()?;
        if let Ok(inverse) = serde_json::from_value::<InvertibilityReport>(report.clone()) {
            if let Some(problem) = inverse.warning() {
                if options.strict {
                    return Err(Error::NonFinite(format!(
                        "{}: {problem}",
                        self.dir.display()
                    )));
                }
                tracing::warn!("{problem}");
            }
        }
        let samples = options.samples.unwrap_or(quality::DEFAULT_SAMPLES);
        if let (Some(data), true) = (self.task().reference_data(), samples > 0) {
            let images = self.sample(Some(samples), None, None)?;
            let quality = quality::image_quality(
                &images,
                data,
                options.feature_net.as_deref(),
                self.device(),
            )?;
            let extra = serde_json::to_value(quality).map_err(|e| Error::config(e.to_string()))?;
            if let (Some(fields), Some(extra)) = (report.as_object_mut(), extra.as_object()) {
                fields.extend(extra.clone());
            }
            for &name in self.task().baseline_samplers() {
                let sample_options = SampleOptions {
                    n: samples,
                    ..Default::default()
                };
                let images = self
                    .task()
                    .sample_baseline(&self.job.run, name, &sample_options)?;
                let q = quality::image_quality(
                    &images,
                    data,
                    options.feature_net.as_deref(),
                    self.device(),
                )?;
                if let Some(fields) = report.as_object_mut() {
                    let pairs = [
                        ("fd", q.fd),
                        ("kid", q.kid_mean),
                        ("kid_std", q.kid_std),
                        ("precision", q.precision),
                        ("recall", q.recall),
                    ];
                    for (key, value) in pairs {
                        fields.insert(format!("{key}_{name}"), serde_json::json!(value));
                    }
                }
            }
        }
        Ok(report)
    }
}
