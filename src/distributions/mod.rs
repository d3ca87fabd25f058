//! Base distributions of flows: `log p(z)` per sample and sampling with a temperature.

use crate::Result;
use tch::{nn::Path, Device, Kind, Tensor};

/// `ln(2 pi)`.
const LN_2PI: f64 = 1.8378770664093453;

/// A distribution over tensors of a fixed event shape (the batch is the first dimension).
pub trait Distribution: std::fmt::Debug {
    /// `log p(z)` per sample, shape `[batch]`.
    fn log_prob(&self, z: &Tensor) -> Result<Tensor>;
    /// `n` samples; `temperature` scales the standard deviation (1 = the distribution itself).
    fn sample(&self, n: i64, temperature: f64, kind: Kind, device: Device) -> Result<Tensor>;
    /// The event shape (without the batch dimension).
    fn event_shape(&self) -> &[i64];
}

fn check_event_shape(z: &Tensor, event: &[i64]) -> Result<()> {
    let size = z.size();
    if size.len() != event.len() + 1 || size[1..] != *event {
        return Err(crate::Error::shape(format!(
            "base distribution over events of shape {event:?} got a tensor of shape {size:?}"
        )));
    }
    Ok(())
}

/// `N(0, I)`: `log p(z) = -(|z|^2 + D ln 2 pi) / 2`.
#[derive(Debug, Clone)]
pub struct StandardNormal {
    event_shape: Vec<i64>,
}

impl StandardNormal {
    /// A standard normal over events of shape `event_shape`.
    pub fn new(event_shape: &[i64]) -> Self {
        StandardNormal {
            event_shape: event_shape.to_vec(),
        }
    }
}

impl Distribution for StandardNormal {
    fn log_prob(&self, z: &Tensor) -> Result<Tensor> {
        check_event_shape(z, &self.event_shape)?;
        let d: i64 = self.event_shape.iter().product();
        let sq = crate::linalg::logdet::per_sample_sum(&z.square());
        Ok((sq + d as f64 * LN_2PI) * -0.5)
    }

    fn sample(&self, n: i64, temperature: f64, kind: Kind, device: Device) -> Result<Tensor> {
        let mut shape = vec![n];
        shape.extend(&self.event_shape);
        Ok(Tensor::randn(shape.as_slice(), (kind, device)) * temperature)
    }

    fn event_shape(&self) -> &[i64] {
        &self.event_shape
    }
}

/// A learned diagonal Gaussian `N(mu, diag(exp(2 log_sigma)))`, initialised at `N(0, I)`.
#[derive(Debug)]
pub struct DiagonalGaussian {
    pub mean: Tensor,
    pub log_std: Tensor,
    event_shape: Vec<i64>,
}

impl DiagonalGaussian {
    /// A diagonal Gaussian over events of shape `event_shape`, parameters under `p`.
    pub fn new(p: &Path, event_shape: &[i64]) -> Self {
        DiagonalGaussian {
            mean: p.zeros("mean", event_shape),
            log_std: p.zeros("log_std", event_shape),
            event_shape: event_shape.to_vec(),
        }
    }
}

impl Distribution for DiagonalGaussian {
    fn log_prob(&self, z: &Tensor) -> Result<Tensor> {
        check_event_shape(z, &self.event_shape)?;
        let e = (z - &self.mean) * (-&self.log_std).exp();
        let per = e.square() * 0.5 + &self.log_std + 0.5 * LN_2PI;
        Ok(-crate::linalg::logdet::per_sample_sum(&per))
    }

    fn sample(&self, n: i64, temperature: f64, kind: Kind, device: Device) -> Result<Tensor> {
        let mut shape = vec![n];
        shape.extend(&self.event_shape);
        let eps = Tensor::randn(shape.as_slice(), (kind, device)) * temperature;
        Ok(eps * self.log_std.exp().to_kind(kind) + self.mean.to_kind(kind))
    }

    fn event_shape(&self) -> &[i64] {
        &self.event_shape
    }
}
