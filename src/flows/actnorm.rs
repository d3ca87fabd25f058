//! ActNorm (Kingma & Dhariwal 2018, Glow, section 3.1): a per-channel affine map
//! `y = (x + b) * exp(s)` with data-dependent initialisation, `ln|det| = H W sum_c s_c`.
//!
//! On the first training call the statistics of the batch set `b = -mean`, `s = -ln(std)` so that the
//! output has zero mean and unit variance per channel; an `initialized` buffer records this, so a
//! resumed or loaded model is never re-initialised. In data-parallel training the statistics are
//! those of the global batch (every rank's rows), so every rank initialises alike, and as one
//! process with the whole batch would.

use super::layer::{channels, Built, LayerExample, LayerSpec};
use super::transform::{FlowContext, Transform};
use super::LayerConfig;
use crate::nn::assign;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{nn::Path, Tensor};

/// The configuration of an [`ActNorm`] (`{ layer = "actnorm" }`): no settings; the channels
/// come from the input. Parameters: `bias`, `log_scale` and the `initialized` flag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActNormConfig {}

impl LayerSpec for ActNormConfig {
    fn collection(&self) -> Option<&'static str> {
        Some("actnorms")
    }

    fn build(&self, p: &Path, input: &[i64]) -> Result<Built> {
        let c = channels(input, "actnorm")?;
        Ok((Box::new(ActNorm::new(p, c)), input.to_vec()))
    }

    fn examples() -> Vec<LayerExample> {
        let config = LayerConfig::ActNorm(ActNormConfig {});
        vec![
            LayerExample::new("actnorm_dense", config.clone(), &[3]),
            LayerExample::new("actnorm_conv", config, &[2, 4, 4]),
        ]
    }
}

/// Channels whose batch standard deviation is below this keep scale 1 at initialisation.
const MIN_INIT_STD: f64 = 1e-3;

/// Per-channel affine normalisation for `[batch, C]` or `[batch, C, H, W]` inputs.
#[derive(Debug)]
pub struct ActNorm {
    pub bias: Tensor,
    pub log_scale: Tensor,
    initialized: Tensor,
    channels: i64,
}

impl ActNorm {
    /// ActNorm over `channels` channels.
    pub fn new(p: &Path, channels: i64) -> Self {
        ActNorm {
            bias: p.zeros("bias", &[channels]),
            log_scale: p.zeros("log_scale", &[channels]),
            initialized: p.zeros_no_train("initialized", &[1]),
            channels,
        }
    }

    /// Shape `[1, C]` or `[1, C, 1, 1]` for broadcasting against `x`, and the spatial size `H W`.
    fn layout(&self, x: &Tensor) -> Result<(Vec<i64>, i64)> {
        let size = x.size();
        if size.len() < 2 || size[1] != self.channels {
            return Err(Error::shape(format!(
                "ActNorm over {} channels got input of shape {size:?} (expected [batch, {}, ...])",
                self.channels, self.channels
            )));
        }
        let mut shape = vec![1, self.channels];
        shape.extend(std::iter::repeat_n(1, size.len() - 2));
        Ok((shape, size[2..].iter().product()))
    }

    /// Whether the data-dependent initialisation has run.
    pub fn is_initialized(&self) -> bool {
        self.initialized.double_value(&[0]) > 0.5
    }

    /// Sets the bias and scale from the statistics of the batch (of the global batch in
    /// data-parallel training).
    fn initialize(&self, x: &Tensor) -> Result<()> {
        let per_channel = x.detach().transpose(0, 1).reshape([self.channels, -1]);
        let (mean, std) = match crate::distributed::active() {
            Some(dp) => dp.channel_moments(&per_channel)?,
            None => (
                per_channel.mean_dim(1, false, x.kind()),
                per_channel.std_dim(1, false, false),
            ),
        };
        assign(&self.bias, &(-mean));
        // Channels without variance in the batch (e.g. injective zero padding) keep scale 1: dividing
        // by their ~0 standard deviation would make the inverse shrink them by ~1e6.
        let log_scale = (-std.clamp_min(MIN_INIT_STD).log())
            .where_self(&std.gt(MIN_INIT_STD), &std.zeros_like());
        assign(&self.log_scale, &log_scale);
        assign(&self.initialized, &self.initialized.ones_like());
        Ok(())
    }
}

impl Transform for ActNorm {
    fn forward(&self, x: &Tensor, ctx: &mut FlowContext) -> Result<(Tensor, Tensor)> {
        let (shape, hw) = self.layout(x)?;
        if ctx.train && !self.is_initialized() {
            self.initialize(x)?;
        }
        let y = (x + self.bias.reshape(shape.as_slice()))
            * self.log_scale.exp().reshape(shape.as_slice());
        let ld = (self.log_scale.sum(x.kind()) * hw as f64).expand([x.size()[0]], false);
        Ok((y, ld))
    }

    fn inverse(&self, y: &Tensor, _ctx: &mut FlowContext) -> Result<Tensor> {
        let (shape, _) = self.layout(y)?;
        Ok(y * (-&self.log_scale).exp().reshape(shape.as_slice())
            - self.bias.reshape(shape.as_slice()))
    }
}
