//! A density model: a transform to a base distribution.
//!
//! `log p(x) = log p_z(f(x)) + ln|det J_f(x)|` (change of variables), and sampling inverts `f`:
//! `x = f^{-1}(z)`, `z ~ p_z` (optionally at a temperature).

use super::transform::{FlowContext, Sequential, Transform};
use crate::distributions::Distribution;
use crate::Result;
use tch::{Device, Kind, Tensor};

/// A normalising flow `x -> z = f(x)` with base distribution `p_z`.
#[derive(Debug)]
pub struct Flow {
    pub transform: Sequential,
    pub base: Box<dyn Distribution>,
}

impl Flow {
    /// A flow from its transform and base distribution.
    pub fn new(transform: Sequential, base: Box<dyn Distribution>) -> Self {
        Flow { transform, base }
    }

    /// `log p(x)` per sample.
    pub fn log_prob(&self, x: &Tensor, ctx: &mut FlowContext) -> Result<Tensor> {
        let (z, logdet) = self.transform.forward(x, ctx)?;
        Ok(self.base.log_prob(&z)? + logdet)
    }

    /// `n` samples `f^{-1}(z)`, `z ~ p_z` at `temperature`.
    pub fn sample(
        &self,
        n: i64,
        temperature: f64,
        kind: Kind,
        device: Device,
        ctx: &mut FlowContext,
    ) -> Result<Tensor> {
        let z = self.base.sample(n, temperature, kind, device)?;
        self.transform.inverse(&z, ctx)
    }
}
