//! Estimators of `ln det(I + J_g(x))` for invertible residual blocks, written over an abstract
//! Jacobian product so that every block (dense or convolutional) shares them.
//!
//! The identity behind them (Behrmann et al. 2019, eq. 6; SPEC section 1):
//! `ln det(I + J) = tr ln(I + J) = sum_{k>=1} (-1)^{k+1} tr(J^k) / k`, valid when `|J|_2 < 1`,
//! where `det(I + J) > 0` so no absolute value is needed.
//!
//! * [`LogDetEstimator::Exact`]: the full Jacobian from `d` products with basis vectors, then an LU
//!   log-determinant (small `d` only).
//! * [`LogDetEstimator::Series`]: the series truncated after `n` terms, each trace estimated with one
//!   Hutchinson probe `v` (`tr(A) = E[v^T A v]`, Gaussian or Rademacher `v`). Biased by at most
//!   [`truncation_bound`].
//! * [`LogDetEstimator::Roulette`]: the unbiased Russian-roulette estimator of Residual Flows
//!   (Chen et al. 2019, eq. 6): the first `n_exact` terms always, then `N` more with `N` drawn from a
//!   geometric or Poisson law, term `k` weighted by `1 / P(N >= k - n_exact)`.
//!
//! Each trace term `v^T J^k v` is computed by `k` products with `J`: either tangent passes (JVPs,
//! first-order autodiff only, [`Backend::Tangent`]) or vector-Jacobian products through a graph
//! (`create_graph = true`, the official i-ResNet method, [`Backend::Vjp`]). Both give the same number
//! for the same probe, since `v^T J^k v = (v^T J^k) v`.

use crate::seeds::{draw_rows, BatchShard};
use crate::{Error, Result};
use rand::Rng;
use rand_distr::{Distribution as _, Geometric, Poisson};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// The law of Hutchinson probe vectors; both have `E[v v^T] = I`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// `v ~ N(0, I)`.
    #[default]
    Gaussian,
    /// Entries uniform on `{-1, +1}` (lower variance for the trace).
    Rademacher,
}

/// How products with the Jacobian are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// Tangent (forward-mode) passes written with ordinary differentiable ops: `J v`.
    #[default]
    Tangent,
    /// Vector-Jacobian products through autograd with `create_graph = true`: `v^T J`
    /// (second-order autodiff, the official i-ResNet method).
    Vjp,
}

/// The law of the number of extra terms `N` of the Russian-roulette estimator.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TermDistribution {
    /// `P(N = m) = p (1-p)^m`, `m >= 0`; `P(N >= m) = (1-p)^m`.
    Geometric { p: f64 },
    /// `N ~ Poisson(lambda)`.
    Poisson { lambda: f64 },
}

impl TermDistribution {
    fn validate(&self) -> Result<()> {
        match *self {
            TermDistribution::Geometric { p } if !(p > 0.0 && p < 1.0) => Err(Error::config(
                format!("roulette geometric p must lie in (0, 1), got {p}"),
            )),
            TermDistribution::Poisson { lambda } if !(lambda > 0.0 && lambda.is_finite()) => Err(
                Error::config(format!("roulette poisson lambda must be > 0, got {lambda}")),
            ),
            _ => Ok(()),
        }
    }

    /// Draws `N`.
    pub fn sample(&self, rng: &mut impl Rng) -> Result<usize> {
        self.validate()?;
        Ok(match *self {
            TermDistribution::Geometric { p } => Geometric::new(p)
                .map_err(|e| Error::config(format!("roulette geometric: {e}")))?
                .sample(rng) as usize,
            TermDistribution::Poisson { lambda } => Poisson::new(lambda)
                .map_err(|e| Error::config(format!("roulette poisson: {e}")))?
                .sample(rng) as usize,
        })
    }

    /// `P(N >= m)`.
    pub fn survival(&self, m: usize) -> f64 {
        match *self {
            TermDistribution::Geometric { p } => (1.0 - p).powi(m as i32),
            TermDistribution::Poisson { lambda } => {
                // 1 - sum_{j < m} e^{-lambda} lambda^j / j!
                let mut term = (-lambda).exp();
                let mut cdf = 0.0;
                for j in 0..m {
                    cdf += term;
                    term *= lambda / (j + 1) as f64;
                }
                (1.0 - cdf).max(0.0)
            }
        }
    }
}

/// A log-determinant estimator, selectable per call (training and evaluation usually differ).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LogDetEstimator {
    /// Full Jacobian and LU log-determinant: exact, costs `d` Jacobian products.
    Exact,
    /// Power series truncated after `terms` terms, one Hutchinson probe per sample.
    Series {
        terms: usize,
        #[serde(default)]
        probe: Probe,
        #[serde(default)]
        backend: Backend,
    },
    /// Unbiased Russian-roulette series: `n_exact` terms always, `N ~ dist` more.
    Roulette {
        n_exact: usize,
        dist: TermDistribution,
        #[serde(default)]
        probe: Probe,
        #[serde(default)]
        backend: Backend,
    },
}

impl Default for LogDetEstimator {
    /// The official i-ResNet training default: 5 series terms, Gaussian probe, tangent passes.
    fn default() -> Self {
        LogDetEstimator::Series {
            terms: 5,
            probe: Probe::Gaussian,
            backend: Backend::Tangent,
        }
    }
}

impl LogDetEstimator {
    /// The backend used for Jacobian products (tangent for the exact method).
    pub fn backend(&self) -> Backend {
        match *self {
            LogDetEstimator::Exact => Backend::Tangent,
            LogDetEstimator::Series { backend, .. } | LogDetEstimator::Roulette { backend, .. } => {
                backend
            }
        }
    }

    /// Checks the settings, with a message saying what to change.
    pub fn validate(&self) -> Result<()> {
        match self {
            LogDetEstimator::Exact => Ok(()),
            LogDetEstimator::Series { terms, .. } if *terms == 0 => {
                Err(Error::config("logdet series needs terms >= 1"))
            }
            LogDetEstimator::Series { .. } => Ok(()),
            LogDetEstimator::Roulette { dist, .. } => dist.validate(),
        }
    }
}

/// The coefficients `(-1)^{k+1} / k`, `k = 1..=n`, of `ln(1 + x)`.
pub fn series_coefficients(n: usize) -> Vec<f64> {
    (1..=n)
        .map(|k| {
            if k % 2 == 1 {
                1.0 / k as f64
            } else {
                -1.0 / k as f64
            }
        })
        .collect()
}

/// Russian-roulette term weights for one draw `n_extra` of `N`: the series coefficient of term `k`
/// divided by `P(N >= k - n_exact)` for the terms beyond the first `n_exact`.
pub fn roulette_coefficients(n_exact: usize, n_extra: usize, dist: &TermDistribution) -> Vec<f64> {
    series_coefficients(n_exact + n_extra)
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let k = i + 1;
            if k <= n_exact {
                c
            } else {
                c / dist.survival(k - n_exact)
            }
        })
        .collect()
}

/// The paper's bound on the truncation error of the first `n` terms, for a `d`-dimensional block
/// with `Lip(g) = lip < 1` (Behrmann et al. 2019, Theorem 3):
/// `|error| <= d (-ln(1 - lip) - sum_{k<=n} lip^k / k)`.
pub fn truncation_bound(d: usize, lip: f64, n: usize) -> f64 {
    let partial: f64 = (1..=n).map(|k| lip.powi(k as i32) / k as f64).sum();
    d as f64 * (-(1.0 - lip).ln() - partial)
}

/// A probe of the same shape, dtype and device as `like`, drawn from libtorch's generator.
///
/// The entries are drawn in row-major order of the shape and then stored in `like`'s memory
/// layout, so the probe's values do not depend on the layout (and drawing stays fast: libtorch's
/// `randn_like` of a channels-last tensor is several times slower than a contiguous draw).
pub fn sample_probe(like: &Tensor, probe: Probe) -> Tensor {
    sample_probe_rows(like, probe, None)
}

/// [`sample_probe`] for the rows `shard` of a global batch in data-parallel training: the probe
/// of the global batch is drawn and this shard's rows kept ([`BatchShard::draw`]), so each rank's
/// probe is its rows of the probe one process draws.
pub fn sample_probe_rows(like: &Tensor, probe: Probe, shard: Option<&BatchShard>) -> Tensor {
    let options = (like.kind(), like.device());
    let v = draw_rows(shard, &like.size(), |shape| match probe {
        Probe::Gaussian => Tensor::randn(shape, options),
        Probe::Rademacher => Tensor::rand(shape, options).ge(0.5).to_kind(like.kind()) * 2.0 - 1.0,
    });
    if like.is_contiguous() {
        return v;
    }
    let mut out = like.empty_like();
    out.copy_(&v);
    out
}

/// Sum over every dimension but the first: per-sample inner products.
pub fn per_sample_sum(t: &Tensor) -> Tensor {
    let dims: Vec<i64> = (1..t.dim() as i64).collect();
    if dims.is_empty() {
        t.shallow_clone()
    } else {
        t.sum_dim_intlist(dims.as_slice(), false, t.kind())
    }
}

/// `sum_k coefficients[k-1] * v^T A^k v` per sample, where `apply(w)` is one product with `A`
/// (either `A w` or `w^T A`; the value is the same).
pub fn weighted_power_traces(
    apply: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    v: &Tensor,
    coefficients: &[f64],
) -> Result<Tensor> {
    let mut w = v.shallow_clone();
    let mut total = Tensor::zeros([v.size()[0]], (v.kind(), v.device()));
    for &c in coefficients {
        w = apply(&w)?;
        total = &total + per_sample_sum(&(&w * v)) * c;
    }
    Ok(total)
}

/// The per-sample Jacobian `[batch, d, d]` (`d` = features per sample) from `d` products `J e_i`.
pub fn full_jacobian(
    jvp: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    like: &Tensor,
) -> Result<Tensor> {
    let shape = like.size();
    let batch = shape[0];
    let d: i64 = shape[1..].iter().product();
    let eye = Tensor::eye(d, (like.kind(), like.device()));
    let mut columns = Vec::with_capacity(d as usize);
    for i in 0..d {
        let e = eye
            .get(i)
            .unsqueeze(0)
            .expand([batch, d], false)
            .reshape(shape.as_slice());
        columns.push(jvp(&e)?.reshape([batch, d]));
    }
    Ok(Tensor::stack(&columns, 2))
}

/// `ln |det(I + J)|` per sample from the full Jacobian, by an LU factorisation (differentiable).
pub fn exact_logdet(
    jvp: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    like: &Tensor,
) -> Result<Tensor> {
    let jac = full_jacobian(jvp, like)?;
    let d = jac.size()[1];
    let eye = Tensor::eye(d, (jac.kind(), jac.device()));
    let (_sign, logabsdet) = Tensor::linalg_slogdet(&(jac + eye));
    Ok(logabsdet)
}

/// Runs `estimator` for one block. `jvp` computes `J t` and `vjp` computes `t^T J` (only called for
/// [`Backend::Vjp`]); `like` is the block's input (for shapes), `rng` draws roulette term counts,
/// and `shard` (data-parallel training) says which rows of the global batch `like` holds, for
/// the probes ([`sample_probe_rows`]).
pub fn estimate(
    estimator: &LogDetEstimator,
    jvp: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    vjp: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    like: &Tensor,
    rng: &mut impl Rng,
    shard: Option<&BatchShard>,
) -> Result<Tensor> {
    estimator.validate()?;
    let (coefficients, probe, backend) = match *estimator {
        LogDetEstimator::Exact => return exact_logdet(jvp, like),
        LogDetEstimator::Series {
            terms,
            probe,
            backend,
        } => (series_coefficients(terms), probe, backend),
        LogDetEstimator::Roulette {
            n_exact,
            dist,
            probe,
            backend,
        } => {
            let n_extra = dist.sample(rng)?;
            (
                roulette_coefficients(n_exact, n_extra, &dist),
                probe,
                backend,
            )
        }
    };
    let v = sample_probe_rows(like, probe, shard).detach();
    match backend {
        Backend::Tangent => weighted_power_traces(jvp, &v, &coefficients),
        Backend::Vjp => weighted_power_traces(vjp, &v, &coefficients),
    }
}
