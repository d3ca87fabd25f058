//! Uniform dequantisation of discrete data (Theis et al. 2016, "A note on the evaluation of
//! generative models"; Dinh et al. 2017, RealNVP, section 4.1): `x in {0, ..., L-1}` becomes
//! `y = (x + u) / L`, `u ~ U[0, 1)^D`.
//!
//! The map `x -> (x + u)/L` has Jacobian `I / L`, so `ln|det J| = -D ln L`: a flow density
//! `p(y)` on the scaled cube `[0, 1)^D` is a density `p(y) L^{-D}` on `[0, L)^D`, whose integral
//! over the unit cell of `x` lower-bounds the discrete probability `P(x)` (Jensen). Hence the
//! reported bits per dimension (SPEC section 1; [`crate::metrics::bits_per_dim`])
//! `bits/dim = (-log p(y) / D + ln L) / ln 2`, the official code's `-log p / (D ln 2) + 8` for
//! `L = 256`.
//!
//! ```
//! use genflow::flows::{Dequantize, FlowContext, Transform};
//! use genflow::linalg::logdet::LogDetEstimator;
//! use tch::Tensor;
//!
//! let mut ctx = FlowContext::eval(LogDetEstimator::Exact, 0);
//! let pixels = Tensor::from_slice(&[0.0f64, 17.0, 255.0]).reshape([1, 3]);
//! let (scaled, logdet) = Dequantize::new(256)?.forward(&pixels, &mut ctx)?;
//! assert!((logdet.double_value(&[0]) + 3.0 * 256f64.ln()).abs() < 1e-12);
//! assert!(Dequantize::new(256)?.inverse(&scaled, &mut ctx)?.equal(&pixels));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::layer::{Built, Domain, LayerExample, LayerSpec};
use super::transform::{FlowContext, Transform};
use super::LayerConfig;
use crate::{Error, Result};
use crate::seeds::BatchShard;
use serde::{Deserialize, Serialize};
use tch::{nn::Path, Kind, Tensor};

/// The configuration of a [`Dequantize`] layer (`{ layer = "dequantize", levels = 256 }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DequantizeConfig {
    /// Levels `L` of the discrete data (256 for 8-bit images).
    pub levels: u32,
}

impl LayerSpec for DequantizeConfig {
    fn collection(&self) -> Option<&'static str> {
        None
    }

    fn build(&self, _p: &Path, input: &[i64]) -> Result<Built> {
        Ok((Box::new(Dequantize::new(self.levels)?), input.to_vec()))
    }

    fn examples() -> Vec<LayerExample> {
        let config = LayerConfig::Dequantize(DequantizeConfig { levels: 256 });
        vec![LayerExample {
            domain: Domain::Levels(256),
            ..LayerExample::new("dequantize", config, &[1, 4, 4])
        }]
    }
}

/// `(min, max)` of `x` as `f64`.
pub(crate) fn value_range(x: &Tensor) -> (f64, f64) {
    tch::no_grad(|| (x.min().double_value(&[]), x.max().double_value(&[])))
}

/// The number of entries per sample (`D`).
pub(crate) fn dims_per_sample(x: &Tensor) -> Result<i64> {
    let size = x.size();
    if size.len() < 2 {
        return Err(Error::shape(format!(
            "expected a batch [batch, ...] with at least one feature dimension, got shape {size:?}"
        )));
    }
    Ok(size[1..].iter().product())
}

/// Uniform dequantisation of `levels`-level data; see the [module documentation](self).
///
/// As a [`Transform`]: `forward(x) = ((x + u) / L, -D ln L)` for integer-valued `x` in
/// `[0, L-1]` (a fresh `u ~ U[0,1)` from libtorch's generator each call) and
/// `inverse(y) = clamp(floor(L y), 0, L-1)`, which recovers `x` exactly when `L` is a power of two
/// (then `L ((x + u) / L) = x + u` in floating point).
#[derive(Debug, Clone, Copy)]
pub struct Dequantize {
    levels: u32,
}

impl Dequantize {
    /// Dequantisation of data with `levels` values per entry (256 for 8-bit images); `levels >= 2`.
    pub fn new(levels: u32) -> Result<Self> {
        if levels < 2 {
            return Err(Error::config(format!(
                "dequantisation needs at least 2 levels, got {levels}"
            )));
        }
        Ok(Dequantize { levels })
    }

    /// The number of levels `L`.
    pub fn levels(&self) -> u32 {
        self.levels
    }

    /// `(x + u) / L`, `u ~ U[0,1)`, in `kind`. `x` holds integer levels in `[0, L-1]` (any dtype,
    /// e.g. `uint8`); anything else is rejected, since scaled or already dequantised data would
    /// silently give wrong bits/dim. With a `shard` (data-parallel training), `x` holds those rows
    /// of a global batch and `u` is their rows of the global batch's noise.
    pub fn dequantize(&self, x: &Tensor, kind: Kind, shard: Option<&BatchShard>) -> Result<Tensor> {
        let x = x.to_kind(kind);
        let (lo, hi) = value_range(&x);
        let fractional = tch::no_grad(|| (&x - x.round()).abs().max().double_value(&[]));
        let top = f64::from(self.levels - 1);
        if lo < 0.0 || hi > top || fractional > 0.0 {
            return Err(Error::config(format!(
                "dequantisation expects integer levels in [0, {top}], got values in [{lo}, {hi}]{}; \
                 data already scaled to [0, 1) must skip this step",
                if fractional > 0.0 { " with fractional parts" } else { "" }
            )));
        }
        let u = match shard {
            Some(shard) => shard.draw(&x.size(), |shape| Tensor::rand(shape, (kind, x.device()))),
            None => x.rand_like(),
        };
        Ok((&x + u) / f64::from(self.levels))
    }

    /// `clamp(floor(L y), 0, L-1)`: the level whose cell `[x/L, (x+1)/L)` contains `y`.
    pub fn quantize(&self, y: &Tensor) -> Tensor {
        let l = f64::from(self.levels);
        (y * l).floor().clamp(0.0, l - 1.0)
    }

    /// `ln|det J| = -D ln L` per sample of `x`.
    fn logdet(&self, x: &Tensor, kind: Kind) -> Result<Tensor> {
        let d = dims_per_sample(x)?;
        Ok(Tensor::full(
            [x.size()[0]],
            -(d as f64) * f64::from(self.levels).ln(),
            (kind, x.device()),
        ))
    }
}

impl Transform for Dequantize {
    /// Integer inputs come out as `f32`; floating inputs keep their dtype.
    fn forward(&self, x: &Tensor, ctx: &mut FlowContext) -> Result<(Tensor, Tensor)> {
        let kind = if x.is_floating_point() {
            x.kind()
        } else {
            Kind::Float
        };
        let logdet = self.logdet(x, kind)?;
        Ok((self.dequantize(x, kind, ctx.shard.as_ref())?, logdet))
    }

    fn inverse(&self, y: &Tensor, _ctx: &mut FlowContext) -> Result<Tensor> {
        Ok(self.quantize(y))
    }
}
