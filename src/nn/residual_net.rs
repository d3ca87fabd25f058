//! The residual function `g` of an i-ResNet block: spectrally normalised linear maps and 1-Lipschitz
//! activations, `Lip(g) <= prod_i |W_hat_i|_2 <= c^L` (L linear maps).
//!
//! Besides the forward pass, `g` can be *linearised* at `x`: the forward pass records each layer's
//! tangent map (the normalised weight for linear maps, `phi'(a)` for activations), after which
//! `J_g(x) t` costs one cheap tangent pass with no autodiff graph of its own ([`Linearized::jvp`]).
//! These passes are ordinary differentiable expressions, so a log-det estimate built from them
//! gets its parameter gradients from one first-order backward pass (SPEC section 1).

use super::activation::{Activation, ActivationKind};
use super::spectral::{Geometry, SpectralConfig, SpectralLinear};
use crate::{Error, Result};
use tch::{nn::Path, Tensor};

/// One layer of `g`.
#[derive(Debug)]
enum Layer {
    Linear(SpectralLinear),
    Act(Activation),
}

/// The tangent map of one layer at the linearisation point.
#[derive(Debug)]
enum TangentMap {
    Linear { weight: Tensor, geometry: Geometry },
    Scale(Tensor),
}

/// `g` linearised at a point: its output there and the tangent maps of its layers.
#[derive(Debug)]
pub struct Linearized {
    /// `g(x)`.
    pub output: Tensor,
    maps: Vec<TangentMap>,
}

impl Linearized {
    /// `J_g(x) t`, one tangent pass through the recorded maps.
    pub fn jvp(&self, t: &Tensor) -> Tensor {
        self.maps
            .iter()
            .fold(t.shallow_clone(), |t, map| match map {
                TangentMap::Linear { weight, geometry } => geometry.apply(weight, &t, None),
                TangentMap::Scale(d) => t * d,
            })
    }
}

/// The sizes of a conv residual net: `channels -> hidden -> ... -> channels` with one odd kernel
/// size per conv (e.g. 3-1-3) at spatial size `hw`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvShape {
    pub channels: i64,
    pub hidden: i64,
    pub kernels: Vec<i64>,
    pub hw: (i64, i64),
}

/// A Lipschitz-constrained network `g`.
#[derive(Debug)]
pub struct ResidualNet {
    layers: Vec<Layer>,
}

impl ResidualNet {
    /// An MLP `dims[0] -> dims[1] -> ... -> dims[n]`: linear maps with `activation` between them,
    /// and also before the first one when `preactivation` is set (Residual Flows' image blocks).
    /// Parameters are named `<path>.<i>.weight` etc. by layer index.
    pub fn mlp(
        p: &Path,
        dims: &[i64],
        activation: ActivationKind,
        spectral: SpectralConfig,
        preactivation: bool,
    ) -> Result<Self> {
        if dims.len() < 2 {
            return Err(Error::config(format!(
                "an MLP needs at least 2 sizes, got {dims:?}"
            )));
        }
        let maps = dims
            .windows(2)
            .enumerate()
            .map(|(i, w)| (i, w[0], w[1], Geometry::Dense))
            .collect::<Vec<_>>();
        Self::build(p, &maps, activation, spectral, preactivation)
    }

    /// The conv `g` of SPEC section 1: `channels -> hidden -> ... -> channels` with the given odd
    /// kernel sizes (e.g. 3-1-3), at spatial size `hw`.
    pub fn conv(
        p: &Path,
        shape: &ConvShape,
        activation: ActivationKind,
        spectral: SpectralConfig,
        preactivation: bool,
    ) -> Result<Self> {
        let hidden = vec![shape.hidden; shape.kernels.len().saturating_sub(1)];
        Self::conv_widths(
            p,
            shape.channels,
            &hidden,
            &shape.kernels,
            shape.hw,
            activation,
            spectral,
            preactivation,
        )
    }

    /// A conv `g` with one width per hidden layer: `channels -> hidden[0] -> ... -> channels`,
    /// `kernels.len() = hidden.len() + 1` odd kernel sizes, at spatial size `hw`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_widths(
        p: &Path,
        channels: i64,
        hidden: &[i64],
        kernels: &[i64],
        hw: (i64, i64),
        activation: ActivationKind,
        spectral: SpectralConfig,
        preactivation: bool,
    ) -> Result<Self> {
        if kernels.is_empty() || kernels.len() != hidden.len() + 1 {
            return Err(Error::config(format!(
                "a conv residual net needs one kernel size more than hidden widths, got kernels \
                 {kernels:?} for hidden {hidden:?}"
            )));
        }
        let widths: Vec<i64> = std::iter::once(channels)
            .chain(hidden.iter().copied())
            .chain(std::iter::once(channels))
            .collect();
        let maps = kernels
            .iter()
            .enumerate()
            .map(|(i, &k)| {
                let geometry = Geometry::Conv {
                    kernel: k,
                    in_hw: hw,
                };
                (i, widths[i], widths[i + 1], geometry)
            })
            .collect::<Vec<_>>();
        Self::build(p, &maps, activation, spectral, preactivation)
    }

    fn build(
        p: &Path,
        maps: &[(usize, i64, i64, Geometry)],
        activation: ActivationKind,
        spectral: SpectralConfig,
        preactivation: bool,
    ) -> Result<Self> {
        let mut layers = Vec::new();
        let mut index = 0usize;
        for (i, &(_, cin, cout, geometry)) in maps.iter().enumerate() {
            if i > 0 || preactivation {
                layers.push(Layer::Act(Activation::new(&(p / index), activation)));
                index += 1;
            }
            let lp = p / index;
            let layer = match geometry {
                Geometry::Dense => SpectralLinear::dense(&lp, cin, cout, spectral)?,
                Geometry::Conv { kernel, in_hw } => {
                    SpectralLinear::conv(&lp, cin, cout, kernel, in_hw, spectral)?
                }
                Geometry::Strided { .. } => {
                    return Err(Error::config(
                        "a residual function keeps its input's shape: its convs have stride 1",
                    ))
                }
            };
            layers.push(Layer::Linear(layer));
            index += 1;
        }
        Ok(ResidualNet { layers })
    }

    /// `g(x)`. Training mode runs the power iterations.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_with(x, &self.normalized_weights(train))
    }

    /// The normalised weights `W_hat_i` of the linear maps, in order (training mode runs the power
    /// iterations). Computing them once and calling [`ResidualNet::forward_with`] repeatedly saves
    /// the sigma estimate per call, e.g. in the fixed-point inversion.
    pub fn normalized_weights(&self, train: bool) -> Vec<Tensor> {
        self.linear_layers()
            .map(|l| l.normalized_weight(train))
            .collect()
    }

    /// `g(x)` with the normalised weights from [`ResidualNet::normalized_weights`].
    pub fn forward_with(&self, x: &Tensor, weights: &[Tensor]) -> Result<Tensor> {
        self.run(x, weights, None)
    }

    /// `g(x)` together with the tangent maps at `x`.
    pub fn linearize(&self, x: &Tensor, train: bool) -> Result<Linearized> {
        let weights = self.normalized_weights(train);
        let mut maps = Vec::with_capacity(self.layers.len());
        let output = self.run(x, &weights, Some(&mut maps))?;
        Ok(Linearized { output, maps })
    }

    /// The layers applied to `x` with the given weights; records the tangent maps into `maps`
    /// when given (activations then also return `phi'(a)`).
    fn run(
        &self,
        x: &Tensor,
        weights: &[Tensor],
        mut maps: Option<&mut Vec<TangentMap>>,
    ) -> Result<Tensor> {
        let n_linear = self.linear_layers().count();
        if weights.len() != n_linear {
            return Err(Error::shape(format!(
                "residual net has {n_linear} linear maps but got {} weights",
                weights.len()
            )));
        }
        let mut weights = weights.iter();
        let mut h = x.shallow_clone();
        for layer in &self.layers {
            h = match (layer, maps.as_deref_mut()) {
                (Layer::Linear(l), maps) => {
                    let weight = weights
                        .next()
                        .ok_or_else(|| Error::shape("missing weight"))?;
                    if let Some(maps) = maps {
                        maps.push(TangentMap::Linear {
                            weight: weight.shallow_clone(),
                            geometry: l.geometry(),
                        });
                    }
                    l.geometry().apply(weight, &h, Some(&l.bias))
                }
                (Layer::Act(a), None) => a.forward(&h)?,
                (Layer::Act(a), Some(maps)) => {
                    let (y, d) = a.forward_with_derivative(&h)?;
                    maps.push(TangentMap::Scale(d));
                    y
                }
            };
        }
        Ok(h)
    }

    /// `x` in the memory layout `g` runs fastest on, same shape and values: channels-last (NHWC
    /// strides) for conv nets on the CPU, where oneDNN convolutions then run without reordering
    /// their inputs (`genflow bench`: about 10% less CPU time per training step of the SN conv
    /// block); `x` itself otherwise. Blocks convert once, and their outputs stay channels-last.
    pub fn preferred_layout(&self, x: &Tensor) -> Tensor {
        let conv = self
            .linear_layers()
            .any(|l| matches!(l.geometry(), Geometry::Conv { .. }));
        if conv && x.dim() == 4 && x.device() == tch::Device::Cpu {
            channels_last(x)
        } else {
            x.shallow_clone()
        }
    }

    /// The spectrally normalised linear maps, in order.
    pub fn linear_layers(&self) -> impl Iterator<Item = &SpectralLinear> {
        self.layers.iter().filter_map(|l| match l {
            Layer::Linear(l) => Some(l),
            Layer::Act(_) => None,
        })
    }

    /// `prod_i |W_hat_i|_2`, computed exactly per layer: an upper bound on `Lip(g)` (activations
    /// are 1-Lipschitz) that the normalisation keeps below `c^L`.
    pub fn lipschitz_bound(&self) -> Result<f64> {
        self.linear_layers()
            .map(|l| l.exact_operator_norm())
            .try_fold(1.0, |acc, s| Ok(acc * s?))
    }

    /// Makes every layer's spectral-norm estimate exact before evaluation
    /// ([`SpectralLinear::certify`]); returns the most iterations any layer needed.
    pub fn certify_spectral_norms(&self, tol: f64, max_iter: usize) -> usize {
        self.linear_layers()
            .map(|l| l.certify(tol, max_iter))
            .max()
            .unwrap_or(0)
    }

    /// Runs every layer's power iteration to `tol`; returns the most iterations any layer needed.
    pub fn refine_spectral_norms(&self, tol: f64, max_iter: usize) -> usize {
        self.linear_layers()
            .map(|l| l.refine(tol, max_iter))
            .max()
            .unwrap_or(0)
    }
}

/// `x` (`[N, C, H, W]`) with channels-last strides `[H W C, 1, W C, C]`: the same tensor values,
/// stored as NHWC. Returns `x` itself when it is already stored so.
pub fn channels_last(x: &Tensor) -> Tensor {
    let s = x.size();
    if s.len() != 4 || x.stride() == [s[1] * s[2] * s[3], 1, s[3] * s[1], s[1]] {
        return x.shallow_clone();
    }
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}
