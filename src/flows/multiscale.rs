//! The multi-scale architecture with optional factor-out (Dinh et al. 2017, RealNVP, section 3.6;
//! Kingma & Dhariwal 2018, Glow, figure 2; Residual Flows' `--factor-out`).
//!
//! Levels `f_0, ..., f_{n-1}` act on images of decreasing size. Between two levels the image is
//! squeezed (`[C, H, W] -> [4C, H/2, W/2]`) and, with factor-out, the first half of its channels
//! leaves the flow as part of the latent while the second half goes on:
//!
//! ```text
//! x -> f_0 -> squeeze -> [z_0 | h_1] ; h_1 -> f_1 -> squeeze -> [z_1 | h_2] ; ... ; h_{n-1} -> f_{n-1} -> z_{n-1}
//! z = concat(flatten(z_0), ..., flatten(z_{n-1}))          (without factor-out: z = flatten(last))
//! ```
//!
//! so the output is one flat latent `[B, D]` (`D = C H W`) for a base distribution over `[D]`, and
//! `ln|det J| = sum_i ln|det J_{f_i}|` (squeezing, splitting and flattening permute entries). The
//! inverse splits `z` back into the pieces and runs the levels in reverse order.
//!
//! ```
//! use genflow::flows::{ActNorm, FlowContext, MultiScale, Transform};
//! use genflow::linalg::logdet::LogDetEstimator;
//! use tch::{nn::VarStore, Device, Kind, Tensor};
//!
//! let vs = VarStore::new(Device::Cpu);
//! let shapes = MultiScale::level_shapes([1, 4, 4], 2, true)?;
//! assert_eq!(shapes, [[1, 4, 4], [2, 2, 2]]);
//! let levels: Vec<Box<dyn Transform>> = shapes
//!     .iter()
//!     .enumerate()
//!     .map(|(i, s)| Box::new(ActNorm::new(&(vs.root() / i), s[0])) as Box<dyn Transform>)
//!     .collect();
//! let ms = MultiScale::new([1, 4, 4], levels, true)?;
//! let x = Tensor::randn([3, 1, 4, 4], (Kind::Float, Device::Cpu));
//! let mut ctx = FlowContext::eval(LogDetEstimator::Exact, 0);
//! let (z, _) = ms.forward(&x, &mut ctx)?;
//! assert_eq!(z.size(), [3, 16]);
//! assert!((ms.inverse(&z, &mut ctx)? - x).abs().max().double_value(&[]) < 1e-6);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::layer::{build_stack, image_shape, Built, LayerExample, LayerSpec};
use super::squeeze::{squeeze2d, unsqueeze2d};
use super::transform::{FlowContext, Transform};
use super::{ActNormConfig, IResBlockConfig, LayerConfig};
use crate::nn::{ActivationKind, ResidualNet, SpectralConfig};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{nn::Path, Tensor};

/// The configuration of a [`MultiScale`] stack (`{ layer = "multi_scale", factor_out = true,
/// levels = [[...], [...]] }`): the layers of each level, which must keep their level's shape.
/// Level `i`'s parameters live under `scales.<i>` of the enclosing stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiScaleConfig {
    /// Factor out half the channels after every squeeze.
    #[serde(default)]
    pub factor_out: bool,
    /// The layers of each level, in order.
    pub levels: Vec<Vec<LayerConfig>>,
}

impl LayerSpec for MultiScaleConfig {
    fn collection(&self) -> Option<&'static str> {
        None
    }

    fn build(&self, p: &Path, input: &[i64]) -> Result<Built> {
        let in_shape = image_shape(input, "multi_scale")?;
        let shapes = MultiScale::level_shapes(in_shape, self.levels.len(), self.factor_out)?;
        let levels = shapes
            .iter()
            .zip(&self.levels)
            .enumerate()
            .map(|(i, (shape, layers))| {
                let (level, out) = build_stack(&(p / "scales" / i), shape, layers)?;
                if out != shape {
                    return Err(Error::config(format!(
                        "level {i} must keep its shape {shape:?}, but its layers give {out:?}"
                    )));
                }
                Ok(Box::new(level) as Box<dyn Transform>)
            })
            .collect::<Result<Vec<_>>>()?;
        let stack = MultiScale::new(in_shape, levels, self.factor_out)?;
        let dims = stack.latent_dims();
        Ok((Box::new(stack), vec![dims]))
    }

    fn examples() -> Vec<LayerExample> {
        let block = IResBlockConfig {
            hidden: vec![4, 4],
            kernels: None,
            activation: ActivationKind::Lipswish,
            spectral: SpectralConfig {
                coeff: 0.9,
                n_power_iter: 5,
            },
            preactivation: true,
        };
        let level = vec![
            LayerConfig::ActNorm(ActNormConfig {}),
            LayerConfig::IResBlock(block),
        ];
        let config = MultiScaleConfig {
            factor_out: true,
            levels: vec![level.clone(), level],
        };
        vec![LayerExample::new(
            "multiscale_factor_out",
            LayerConfig::MultiScale(config),
            &[2, 4, 4],
        )]
    }
}

/// A stack of levels with squeezes (and optionally factor-out) between them, ending in a flat
/// latent; see the [module documentation](self).
#[derive(Debug)]
pub struct MultiScale {
    levels: Vec<Box<dyn Transform>>,
    /// `[C, H, W]` of each level's input.
    shapes: Vec<[i64; 3]>,
    factor_out: bool,
}

impl MultiScale {
    /// The input shape `[C, H, W]` of each of `n_levels` levels for images of shape `in_shape`:
    /// each squeeze gives `[4C, H/2, W/2]`, halved to `[2C, H/2, W/2]` by factor-out. Errors when
    /// a squeezed height or width would be odd.
    pub fn level_shapes(
        in_shape: [i64; 3],
        n_levels: usize,
        factor_out: bool,
    ) -> Result<Vec<[i64; 3]>> {
        if n_levels == 0 || in_shape.iter().any(|&s| s < 1) {
            return Err(Error::config(format!(
                "a multi-scale flow needs at least one level and a positive image shape, got {n_levels} \
                 levels for {in_shape:?}"
            )));
        }
        let mut shapes = vec![in_shape];
        for _ in 1..n_levels {
            let [c, h, w] = shapes[shapes.len() - 1];
            if h % 2 != 0 || w % 2 != 0 {
                return Err(Error::config(format!(
                    "{n_levels} scales squeeze images of shape {in_shape:?} {} times, but a squeeze \
                     would meet an odd size {h}x{w}; use fewer scales or height and width divisible \
                     by 2^(scales - 1)",
                    n_levels - 1
                )));
            }
            let channels = if factor_out { 2 * c } else { 4 * c };
            shapes.push([channels, h / 2, w / 2]);
        }
        Ok(shapes)
    }

    /// The multi-scale stack over images of shape `in_shape`; `levels[i]` must act on
    /// `level_shapes(in_shape, levels.len(), factor_out)[i]` and keep that shape.
    pub fn new(
        in_shape: [i64; 3],
        levels: Vec<Box<dyn Transform>>,
        factor_out: bool,
    ) -> Result<Self> {
        let shapes = Self::level_shapes(in_shape, levels.len(), factor_out)?;
        Ok(MultiScale {
            levels,
            shapes,
            factor_out,
        })
    }

    /// The input shape of each level.
    pub fn shapes(&self) -> &[[i64; 3]] {
        &self.shapes
    }

    /// The levels, in forward order.
    pub fn levels(&self) -> &[Box<dyn Transform>] {
        &self.levels
    }

    /// `D = C H W`, the size of the flat latent.
    pub fn latent_dims(&self) -> i64 {
        self.shapes[0].iter().product()
    }

    /// The sizes of the pieces of the flat latent, in order: `z_0, ..., z_{n-2}` (factor-out only)
    /// and the last level's output.
    fn piece_shapes(&self) -> Vec<[i64; 3]> {
        let last = self.shapes[self.shapes.len() - 1];
        let factored = self.shapes[1..].iter().filter(|_| self.factor_out).copied();
        factored.chain(std::iter::once(last)).collect()
    }
}

/// `[B, C, H, W]` with the given `[C, H, W]`.
fn batch_shape(batch: i64, shape: [i64; 3]) -> [i64; 4] {
    [batch, shape[0], shape[1], shape[2]]
}

impl Transform for MultiScale {
    fn forward(&self, x: &Tensor, ctx: &mut FlowContext) -> Result<(Tensor, Tensor)> {
        let size = x.size();
        if size.len() != 4 || size[1..] != self.shapes[0] {
            return Err(Error::shape(format!(
                "multi-scale flow over images {:?} got input of shape {size:?}",
                self.shapes[0]
            )));
        }
        let batch = size[0];
        let mut logdet = Tensor::zeros([batch], (x.kind(), x.device()));
        let mut pieces = Vec::with_capacity(self.levels.len());
        let mut h = x.shallow_clone();
        for (i, level) in self.levels.iter().enumerate() {
            let (out, ld) = level.forward(&h, ctx)?;
            logdet += ld;
            h = out;
            if i + 1 < self.levels.len() {
                h = squeeze2d(&h)?;
                if self.factor_out {
                    let half = h.size()[1] / 2;
                    pieces.push(h.narrow(1, 0, half).reshape([batch, -1]));
                    h = h.narrow(1, half, half);
                }
            }
        }
        pieces.push(h.reshape([batch, -1]));
        Ok((Tensor::cat(&pieces, 1), logdet))
    }

    fn inverse(&self, z: &Tensor, ctx: &mut FlowContext) -> Result<Tensor> {
        let size = z.size();
        if size.len() != 2 || size[1] != self.latent_dims() {
            return Err(Error::shape(format!(
                "multi-scale flow expects flat latents [batch, {}], got {size:?}",
                self.latent_dims()
            )));
        }
        let batch = size[0];
        let shapes = self.piece_shapes();
        let lengths: Vec<i64> = shapes.iter().map(|s| s.iter().product()).collect();
        let mut pieces: Vec<Tensor> = z
            .split_with_sizes(lengths.as_slice(), 1)
            .into_iter()
            .zip(&shapes)
            .map(|(p, &s)| p.reshape(batch_shape(batch, s)))
            .collect();
        let mut h = pieces
            .pop()
            .ok_or_else(|| Error::shape("multi-scale latent has no pieces"))?;
        for (i, level) in self.levels.iter().enumerate().rev() {
            h = level.inverse(&h, ctx)?;
            if i > 0 {
                if self.factor_out {
                    let zi = pieces
                        .pop()
                        .ok_or_else(|| Error::shape("multi-scale latent piece missing"))?;
                    h = Tensor::cat(&[zi, h], 1);
                }
                h = unsqueeze2d(&h)?;
            }
        }
        Ok(h)
    }

    fn residual_nets(&self) -> Vec<&ResidualNet> {
        self.levels.iter().flat_map(|l| l.residual_nets()).collect()
    }
}
