//! Injective zero padding of channels, `[B, C, ...] -> [B, C + k, ...]` (i-ResNet classifier,
//! Behrmann et al. 2019, section 5.1, after the i-RevNet of Jacobsen et al. 2018): the new channels
//! are zeros, so the classifier's blocks get more width while the map stays invertible on its image.
//!
//! The map is *injective, not bijective*: its Jacobian is `D x (D + k D/C)`, not square, and has no
//! determinant. [`Transform::forward`] therefore returns zeros as the log-det; do not put this layer
//! in a density model. [`Transform::inverse`] drops the padded channels after checking that they
//! are (close to) zero, i.e. that the input lies on the image of the padding.
//!
//! ```
//! use genflow::flows::{FlowContext, InjectivePad, Transform};
//! use genflow::linalg::logdet::LogDetEstimator;
//! use tch::{Kind, Tensor};
//!
//! let pad = InjectivePad::new(3, 13)?; // 3 colour channels -> 16, as the i-ResNet classifier
//! let x = Tensor::randn([2, 3, 8, 8], (Kind::Float, tch::Device::Cpu));
//! let mut ctx = FlowContext::eval(LogDetEstimator::Exact, 0);
//! let (y, _) = pad.forward(&x, &mut ctx)?;
//! assert_eq!(y.size(), [2, 16, 8, 8]);
//! assert!(pad.inverse(&y, &mut ctx)?.equal(&x));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::layer::{Built, LayerExample, LayerSpec};
use super::transform::{FlowContext, Transform};
use super::LayerConfig;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{nn::Path, Tensor};

/// The configuration of an [`InjectivePad`] (`{ layer = "injective_pad", extra_channels = 13 }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectivePadConfig {
    /// Zero channels appended (`k`).
    pub extra_channels: i64,
}

impl LayerSpec for InjectivePadConfig {
    fn collection(&self) -> Option<&'static str> {
        None
    }

    fn build(&self, _p: &Path, input: &[i64]) -> Result<Built> {
        let (&c, rest) = input.split_first().ok_or_else(|| {
            Error::config("injective padding needs inputs with a channel dimension")
        })?;
        let pad = InjectivePad::new(c, self.extra_channels)?;
        let out = std::iter::once(pad.out_channels()).chain(rest.iter().copied());
        Ok((Box::new(pad), out.collect()))
    }

    fn examples() -> Vec<LayerExample> {
        let config = LayerConfig::InjectivePad(InjectivePadConfig { extra_channels: 3 });
        vec![LayerExample {
            bijective: false,
            ..LayerExample::new("injective_pad", config, &[2, 4, 4])
        }]
    }
}

/// Tolerance of the check in [`Transform::inverse`]: padded entries must satisfy
/// `|p| <= tol * max(1, max|y|)`. Inverting through i-ResNet blocks leaves fixed-point errors of
/// the order of the inversion's `atol`/`rtol` (1e-5); 1e-3 leaves room for those.
pub const PAD_TOLERANCE: f64 = 1e-3;

/// Zero padding of `channels` input channels by `extra` channels; see the [module documentation](self).
#[derive(Debug, Clone, Copy)]
pub struct InjectivePad {
    channels: i64,
    extra: i64,
}

impl InjectivePad {
    /// Pads `channels` channels with `extra >= 0` zero channels (tolerance [`PAD_TOLERANCE`]).
    pub fn new(channels: i64, extra: i64) -> Result<Self> {
        if channels < 1 || extra < 0 {
            return Err(Error::config(format!(
                "injective padding needs channels >= 1 and extra >= 0, got {channels} and {extra}"
            )));
        }
        Ok(InjectivePad { channels, extra })
    }

    /// Channels after padding, `C + k`.
    pub fn out_channels(&self) -> i64 {
        self.channels + self.extra
    }

    fn check_channels(&self, x: &Tensor, expected: i64) -> Result<()> {
        let size = x.size();
        if size.len() < 2 || size[1] != expected {
            return Err(Error::shape(format!(
                "injective padding {} -> {} channels expected [batch, {expected}, ...], got {size:?}",
                self.channels,
                self.out_channels()
            )));
        }
        Ok(())
    }
}

impl Transform for InjectivePad {
    /// `[x, 0]` along the channels; the log-det is zeros (the map is injective, not bijective).
    fn forward(&self, x: &Tensor, _ctx: &mut FlowContext) -> Result<(Tensor, Tensor)> {
        self.check_channels(x, self.channels)?;
        let mut pad_shape = x.size();
        pad_shape[1] = self.extra;
        let zeros = Tensor::zeros(pad_shape.as_slice(), (x.kind(), x.device()));
        let logdet = Tensor::zeros([x.size()[0]], (x.kind(), x.device()));
        Ok((Tensor::cat(&[x, &zeros], 1), logdet))
    }

    /// The first `C` channels, after checking the padded ones are zero within the tolerance.
    fn inverse(&self, y: &Tensor, _ctx: &mut FlowContext) -> Result<Tensor> {
        self.check_channels(y, self.out_channels())?;
        let (pad_max, scale) = tch::no_grad(|| {
            let pad = y.narrow(1, self.channels, self.extra);
            let pad_max = if self.extra > 0 {
                pad.abs().max().double_value(&[])
            } else {
                0.0
            };
            (pad_max, y.abs().max().double_value(&[]).max(1.0))
        });
        if pad_max.is_nan() || pad_max > PAD_TOLERANCE * scale {
            return Err(Error::shape(format!(
                "the padded channels of the input to the inverse padding are not zero (max |.| = \
                 {pad_max:e}, tolerance {:e}): it is not the image of an injective padding",
                PAD_TOLERANCE * scale
            )));
        }
        Ok(y.narrow(1, 0, self.channels))
    }
}
