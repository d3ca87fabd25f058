//! Batch normalisation that normalises with the statistics of the global batch in data-parallel
//! training, as one process with the whole batch would.
//!
//! A [`BatchNorm`] holds the variables of `tch::nn::BatchNorm` under the same names (`weight`,
//! `bias`, `running_mean`, `running_var`), so checkpoints are the same. Outside data-parallel
//! training it is `tch::nn::BatchNorm`'s forward pass. In training mode under an active
//! [`DataParallel`](crate::distributed::DataParallel) context it is PyTorch's `SyncBatchNorm`
//! ([`DataParallel::batch_norm`](crate::distributed::DataParallel::batch_norm)): the batch mean
//! and variance, the running statistics and the gradients (through the statistics' dependence on
//! every rank's rows) are those of the global batch, so two ranks with half a batch each train
//! exactly as one process with the whole batch.

use crate::Result;
use tch::nn::{BatchNormConfig, ModuleT, Path};
use tch::Tensor;

/// Batch normalisation over the channels (dimension 1) of `[N, C, ...]` inputs; see the
/// [module documentation](self).
#[derive(Debug)]
pub struct BatchNorm {
    inner: tch::nn::BatchNorm,
    momentum: f64,
    eps: f64,
}

/// A [`BatchNorm`] over `channels` channels of `[N, C, H, W]` inputs, with its variables under `p`.
pub fn batch_norm2d(p: &Path, channels: i64, config: BatchNormConfig) -> BatchNorm {
    let (momentum, eps) = (config.momentum, config.eps);
    BatchNorm {
        inner: tch::nn::batch_norm2d(p, channels, config),
        momentum,
        eps,
    }
}

/// A [`BatchNorm`] over `channels` features of `[N, C]` (or `[N, C, L]`) inputs, with its
/// variables under `p`.
pub fn batch_norm1d(p: &Path, channels: i64, config: BatchNormConfig) -> BatchNorm {
    let (momentum, eps) = (config.momentum, config.eps);
    BatchNorm {
        inner: tch::nn::batch_norm1d(p, channels, config),
        momentum,
        eps,
    }
}

impl BatchNorm {
    /// The normalised `x`: with the batch's statistics in training mode (the global batch's in
    /// data-parallel training, updating the running statistics with them), with the running
    /// statistics otherwise.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match crate::distributed::active() {
            Some(dp) if train => {
                // Without affine parameters, a unit scale and a zero shift that need no gradient
                // (exact: multiplying by 1 and adding 0 change no bit), since the synchronised
                // pass wants both or neither defined.
                let constant = |value: f64| -> Result<Tensor> {
                    let channels = x.size().get(1).copied().unwrap_or(0);
                    Ok(Tensor::f_full([channels], value, (x.kind(), x.device()))?)
                };
                let ws = match &self.inner.ws {
                    Some(w) => w.shallow_clone(),
                    None => constant(1.0)?,
                };
                let bs = match &self.inner.bs {
                    Some(b) => b.shallow_clone(),
                    None => constant(0.0)?,
                };
                dp.batch_norm(
                    x,
                    Some(&ws),
                    Some(&bs),
                    &self.inner.running_mean,
                    &self.inner.running_var,
                    self.momentum,
                    self.eps,
                )
            }
            _ => Ok(self.inner.forward_t(x, train)),
        }
    }
}
