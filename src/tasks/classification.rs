//! What the image classifiers share (the i-ResNet classifier and the feature network): pixels
//! to intensities, cross-entropy on a batch with its accuracy, and test accuracy in batches.

use crate::data::ImageDataset;
use crate::Result;
use tch::{Device, Kind, Tensor};

/// A model that maps intensities `[n, C, H, W]` in `[0, 1]` to class logits `[n, classes]`
/// (BatchNorm with batch statistics when `train`).
pub(crate) trait Logits {
    fn logits(&self, x: &Tensor, train: bool) -> Result<Tensor>;
}

/// Images stored as levels `0..levels` scaled to intensities in `[0, 1]`, on `device`.
pub(crate) fn intensities(images: &Tensor, levels: u32, device: Device) -> Tensor {
    images.to_device(device).to_kind(Kind::Float) / (f64::from(levels) - 1.0)
}

/// The cross-entropy of `labels` on a training batch of stored images, and the batch's accuracy
/// to log beside it.
pub(crate) fn cross_entropy(
    model: &dyn Logits,
    images: &Tensor,
    labels: &Tensor,
    levels: u32,
    device: Device,
) -> Result<(Tensor, Vec<(String, f64)>)> {
    let logits = model.logits(&intensities(images, levels, device), true)?;
    let y = labels.to_device(device);
    let loss = logits.cross_entropy_for_logits(&y);
    let acc = tch::no_grad(|| {
        logits
            .argmax(-1, false)
            .eq_tensor(&y)
            .to_kind(Kind::Float)
            .mean(Kind::Float)
    });
    Ok((loss, vec![("train_accuracy".into(), acc.double_value(&[]))]))
}

/// Fraction of `test` classified correctly, in batches of `batch` (with a progress bar).
pub(crate) fn accuracy(
    model: &dyn Logits,
    test: &ImageDataset,
    device: Device,
    batch: i64,
) -> Result<f64> {
    let mut correct = 0i64;
    let chunks = test.images.split(batch, 0);
    let bar = crate::progress::bar(chunks.len() as u64, 0, "accuracy");
    for (x, y) in chunks.iter().zip(test.labels.split(batch, 0)) {
        let x = intensities(x, test.levels, device);
        let logits = tch::no_grad(|| model.logits(&x, false))?;
        correct += logits
            .argmax(-1, false)
            .to_device(Device::Cpu)
            .eq_tensor(&y)
            .sum(Kind::Int64)
            .int64_value(&[]);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(correct as f64 / test.len() as f64)
}
