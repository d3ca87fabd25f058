//! GAN losses, gradient penalties and O-GAN's correlation term, as functions of the
//! discriminator's outputs (SPEC section 3).
//!
//! With `d_r = D(x_r)`, `d_f = D(x_f)` the scores of real and generated items (higher = more
//! real) and `E[.]` the batch mean:
//!
//! | loss | `L_D` | `L_G` |
//! |---|---|---|
//! | non-saturating (Goodfellow et al. 2014, section 3) | `E[softplus(-d_r)] + E[softplus(d_f)]` | `E[softplus(-d_f)]` |
//! | hinge (Lim & Ye 2017; Miyato et al. 2018, eq. 16-17) | `E[max(0, 1 - d_r)] + E[max(0, 1 + d_f)]` | `-E[d_f]` |
//! | GAN-QP (Su 2018, arXiv:1811.07296, eq. 26) | `E[-T + T^2 / (2 lambda d(x_r, x_f))]`, `T = d_r - d_f` | `E[d_r - d_f]` |
//!
//! GAN-QP pairs the i-th real with the i-th generated item; `d` is the mean absolute difference
//! of their elements (the paper's L1, `lambda = 10`) or the mean squared difference (the O-GAN
//! reference's, with `1 / (2 lambda) = 0.25`: `lambda = 2`).
//!
//! Penalties, added to `L_D`, by second-order autodiff (the gradient is taken with a graph, so
//! `L_D`'s backward pass differentiates it again):
//! * R1 (Mescheder et al. 2018, eq. 9): `gamma / 2 * E[|grad_x D(x_r)|^2]`;
//! * WGAN-GP (Gulrajani et al. 2017, eq. 3): `lambda * E[(|grad_x D(x_hat)|_2 - 1)^2]` at
//!   `x_hat = eps x_r + (1 - eps) x_f`, `eps ~ U[0, 1]` per item.
//!
//! O-GAN (Su 2019, arXiv:1903.01931): the discriminator is an encoder `E: x -> R^{n_z}`, its
//! score the mean of the components, `D(x) = avg(E(x))`, and both nets add
//! `-lambda * E[rho(z, E(G(z)))]` with `rho` the Pearson correlation across the `n_z` components of
//! one item ([`row_correlation`]).

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// The adversarial loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum GanLoss {
    /// The non-saturating loss.
    #[default]
    NonSaturating,
    /// The hinge loss.
    Hinge,
    /// GAN-QP with its quadratic term: `loss = { gan-qp = { lambda = 2.0, distance = "l2" } }`.
    GanQp(QpConfig),
}

/// The quadratic term of GAN-QP.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QpConfig {
    /// `lambda` of `T^2 / (2 lambda d)` (default 10, the paper's).
    #[serde(default = "default_qp_lambda")]
    pub lambda: f64,
    /// The distance `d` between paired items (default `l1`, the paper's).
    #[serde(default)]
    pub distance: QpDistance,
}

fn default_qp_lambda() -> f64 {
    10.0
}

/// The distance between a real and a generated item in GAN-QP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum QpDistance {
    /// Mean absolute difference of the elements.
    #[default]
    L1,
    /// Mean squared difference of the elements (the O-GAN reference).
    L2,
}

/// A gradient penalty on the discriminator.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Penalty {
    /// R1: `gamma / 2 * E[|grad D(x_r)|^2]` on real items.
    R1 {
        /// The weight `gamma` (Mescheder et al.: 10 on images, 0.1 to 10 elsewhere).
        gamma: f64,
    },
    /// WGAN-GP: `lambda * E[(|grad D(x_hat)| - 1)^2]` on random interpolates.
    WganGp {
        /// The weight `lambda` (Gulrajani et al.: 10).
        lambda: f64,
    },
}

impl GanLoss {
    /// Checks the GAN-QP settings.
    pub fn validate(&self) -> Result<()> {
        if let GanLoss::GanQp(qp) = self {
            if !(qp.lambda > 0.0 && qp.lambda.is_finite()) {
                return Err(Error::config(format!(
                    "train.loss: gan-qp lambda must be a positive number, got {}",
                    qp.lambda
                )));
            }
        }
        Ok(())
    }

    /// `L_D` from the scores `[n]` of real items `x_real` and of generated items `x_fake` (without
    /// a graph to the generator); the items are only read by GAN-QP's distance.
    pub fn discriminator(
        &self,
        d_real: &Tensor,
        d_fake: &Tensor,
        x_real: &Tensor,
        x_fake: &Tensor,
    ) -> Tensor {
        match self {
            GanLoss::NonSaturating => {
                (-d_real).softplus().mean(d_real.kind()) + d_fake.softplus().mean(d_fake.kind())
            }
            GanLoss::Hinge => {
                (-d_real + 1.0).relu().mean(d_real.kind())
                    + (d_fake + 1.0).relu().mean(d_fake.kind())
            }
            GanLoss::GanQp(qp) => {
                let t = d_real - d_fake;
                let dims: Vec<i64> = (1..x_real.dim() as i64).collect();
                let diff = x_real - x_fake;
                let dist = match qp.distance {
                    QpDistance::L1 => diff.abs(),
                    QpDistance::L2 => diff.square(),
                }
                .mean_dim(dims.as_slice(), false, x_real.kind());
                (-&t + t.square() / (dist * (2.0 * qp.lambda))).mean(t.kind())
            }
        }
    }

    /// `L_G` from the scores `[n]` of real items and of generated items (with a graph to the
    /// generator); the real scores only enter GAN-QP's value.
    pub fn generator(&self, d_real: &Tensor, d_fake: &Tensor) -> Tensor {
        match self {
            GanLoss::NonSaturating => (-d_fake).softplus().mean(d_fake.kind()),
            GanLoss::Hinge => -d_fake.mean(d_fake.kind()),
            GanLoss::GanQp(_) => (d_real - d_fake).mean(d_fake.kind()),
        }
    }
}

impl Penalty {
    /// Checks the weight.
    pub fn validate(&self) -> Result<()> {
        let (name, w) = match self {
            Penalty::R1 { gamma } => ("r1 gamma", *gamma),
            Penalty::WganGp { lambda } => ("wgan-gp lambda", *lambda),
        };
        if w >= 0.0 && w.is_finite() {
            Ok(())
        } else {
            Err(Error::config(format!(
                "train.penalty: {name} must be a finite number >= 0, got {w}"
            )))
        }
    }
}

/// The gradient of `sum_i scores_i` with respect to the items `x` (which must require gradients),
/// with a graph (`create_graph`), so that a loss built from it can be differentiated again. Each
/// item's score depends on its own item only (batch norm aside), so row `i` is `grad D(x_i)`.
pub fn input_gradient(scores: &Tensor, x: &Tensor) -> Result<Tensor> {
    let grads = Tensor::f_run_backward(&[scores.sum(scores.kind())], &[x], true, true)?;
    grads
        .into_iter()
        .next()
        .ok_or_else(|| Error::config("autograd returned no input gradient"))
}

/// R1: `gamma / 2 * E[|grad_x D(x)|^2]` from the scores of the items `x` (requiring gradients).
pub fn r1(scores: &Tensor, x: &Tensor, gamma: f64) -> Result<Tensor> {
    let g = input_gradient(scores, x)?.flatten(1, -1);
    Ok(g.square()
        .sum_dim_intlist(1, false, g.kind())
        .mean(g.kind())
        * (gamma / 2.0))
}

/// WGAN-GP: `lambda * E[(|grad_x D(x)|_2 - 1)^2]` from the scores of the interpolates `x`
/// (requiring gradients).
pub fn wgan_gp(scores: &Tensor, x: &Tensor, lambda: f64) -> Result<Tensor> {
    let g = input_gradient(scores, x)?.flatten(1, -1);
    let norm = g.square().sum_dim_intlist(1, false, g.kind()).sqrt();
    Ok((norm - 1.0).square().mean(g.kind()) * lambda)
}

/// `eps x_real + (1 - eps) x_fake` with `eps ~ U[0, 1]` per item (libtorch's generator), requiring
/// gradients: the points of the WGAN-GP penalty.
pub fn interpolates(x_real: &Tensor, x_fake: &Tensor) -> Tensor {
    let mut shape = vec![x_real.size()[0]];
    shape.extend(std::iter::repeat_n(1, x_real.dim() - 1));
    let eps = Tensor::rand(shape.as_slice(), (x_real.kind(), x_real.device()));
    (x_fake + eps * (x_real - x_fake))
        .detach()
        .set_requires_grad(true)
}

/// Pearson's correlation of each row of `a` with the same row of `b` (`[n, k]` each): both rows
/// centred, L2-normalised and multiplied (O-GAN's `correlation`; the norm is floored at 1e-12 as
/// Keras's `l2_normalize`). Returns `[n]`.
pub fn row_correlation(a: &Tensor, b: &Tensor) -> Tensor {
    let unit = |t: &Tensor| {
        let c = t - t.mean_dim(1, true, t.kind());
        let norm = c
            .square()
            .sum_dim_intlist(1, true, t.kind())
            .sqrt()
            .clamp_min(1e-12);
        c / norm
    };
    (unit(a) * unit(b)).sum_dim_intlist(1, false, a.kind())
}

/// O-GAN's latent normalisation `N(e)`: each row centred and scaled to unit standard deviation
/// (population), the latent the generator reconstructs from, `x_hat = G(N(E(x)))`.
pub fn standardize_rows(e: &Tensor) -> Tensor {
    let c = e - e.mean_dim(1, true, e.kind());
    let std = c
        .square()
        .mean_dim(1, true, e.kind())
        .sqrt()
        .clamp_min(1e-12);
    c / std
}
