//! Squeeze (space-to-depth): `[B, C, H, W] -> [B, 4C, H/2, W/2]`, a permutation of the entries, so
//! `ln|det J| = 0` (Dinh et al. 2017, RealNVP, section 3.6; Kingma & Dhariwal 2018, Glow; the
//! "invertible downsampling" of Jacobsen et al. 2018, i-RevNet, used by i-ResNet).
//!
//! Each 2x2 patch becomes four channels: `y[b, 4c + 2i + j, h, w] = x[b, c, 2h + i, 2w + j]`
//! (`i, j` in `{0, 1}`), the ordering of Glow's `squeeze2d`.
//!
//! ```
//! use genflow::flows::{FlowContext, Squeeze, Transform};
//! use genflow::linalg::logdet::LogDetEstimator;
//! use tch::{Kind, Tensor};
//!
//! let x = Tensor::arange(16, (Kind::Double, tch::Device::Cpu)).reshape([1, 1, 4, 4]);
//! let mut ctx = FlowContext::eval(LogDetEstimator::Exact, 0);
//! let (y, logdet) = Squeeze.forward(&x, &mut ctx)?;
//! assert_eq!(y.size(), [1, 4, 2, 2]);
//! // channel 1 holds the top-right pixel of each patch: x[0, 0, 0, 1] = 1, x[0, 0, 0, 3] = 3, ...
//! assert_eq!(Vec::<f64>::try_from(y.get(0).get(1).reshape([-1]))?, [1.0, 3.0, 9.0, 11.0]);
//! assert_eq!(logdet.double_value(&[0]), 0.0);
//! assert!(Squeeze.inverse(&y, &mut ctx)?.equal(&x));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::layer::{image_shape, Built, LayerExample, LayerSpec};
use super::transform::{FlowContext, Transform};
use super::LayerConfig;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{nn::Path, Tensor};

/// The configuration of a [`Squeeze`] (`{ layer = "squeeze" }`): no settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqueezeConfig {}

impl LayerSpec for SqueezeConfig {
    fn collection(&self) -> Option<&'static str> {
        None
    }

    fn build(&self, _p: &Path, input: &[i64]) -> Result<Built> {
        let [c, h, w] = image_shape(input, "squeeze")?;
        if h % 2 != 0 || w % 2 != 0 {
            return Err(Error::config(format!(
                "squeeze halves height and width, which must be even, got {h}x{w}"
            )));
        }
        Ok((Box::new(Squeeze), vec![4 * c, h / 2, w / 2]))
    }

    fn examples() -> Vec<LayerExample> {
        let config = LayerConfig::Squeeze(SqueezeConfig {});
        vec![LayerExample::new("squeeze", config, &[2, 4, 4])]
    }
}

/// Space-to-depth by a factor 2; see the [module documentation](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct Squeeze;

/// The sizes `[B, C, H, W]` of a 4-d tensor, or a shape error naming `what`.
fn image_size(x: &Tensor, what: &str) -> Result<[i64; 4]> {
    <[i64; 4]>::try_from(x.size()).map_err(|s| {
        Error::shape(format!(
            "{what} expects images [batch, channels, height, width], got shape {s:?}"
        ))
    })
}

/// `[B, C, H, W] -> [B, 4C, H/2, W/2]`; errors when `H` or `W` is odd.
pub fn squeeze2d(x: &Tensor) -> Result<Tensor> {
    let [b, c, h, w] = image_size(x, "squeeze")?;
    if h % 2 != 0 || w % 2 != 0 {
        return Err(Error::shape(format!(
            "squeeze halves height and width, which must be even; got {h}x{w} (crop or pad the images, \
             or use fewer scales)"
        )));
    }
    Ok(x.reshape([b, c, h / 2, 2, w / 2, 2])
        .permute([0, 1, 3, 5, 2, 4])
        .reshape([b, 4 * c, h / 2, w / 2]))
}

/// `[B, 4C, H, W] -> [B, C, 2H, 2W]`, the inverse of [`squeeze2d`]; errors when the channels are not
/// a multiple of 4.
pub fn unsqueeze2d(y: &Tensor) -> Result<Tensor> {
    let [b, c4, h, w] = image_size(y, "unsqueeze")?;
    if c4 % 4 != 0 {
        return Err(Error::shape(format!(
            "unsqueeze needs a multiple of 4 channels (a squeezed tensor), got {c4}"
        )));
    }
    let c = c4 / 4;
    Ok(y.reshape([b, c, 2, 2, h, w])
        .permute([0, 1, 4, 2, 5, 3])
        .reshape([b, c, 2 * h, 2 * w]))
}

impl Transform for Squeeze {
    fn forward(&self, x: &Tensor, _ctx: &mut FlowContext) -> Result<(Tensor, Tensor)> {
        let y = squeeze2d(x)?;
        let logdet = Tensor::zeros([x.size()[0]], (x.kind(), x.device()));
        Ok((y, logdet))
    }

    fn inverse(&self, y: &Tensor, _ctx: &mut FlowContext) -> Result<Tensor> {
        unsqueeze2d(y)
    }
}
