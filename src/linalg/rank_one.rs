//! The explicit exponential of a rank-one matrix (SPEC section 2, Su 2019-03-01).
//!
//! For vectors `x, y` with `s = y^T x`, `(x y^T)^k = s^{k-1} x y^T`, hence
//! `exp(x y^T) = I + (e^s - 1)/s x y^T = I + phi(s) x y^T` with `phi(s) = expm1(s)/s`
//! (`phi(0) = 1`). Its determinant is `e^s` (matrix determinant lemma: `1 + phi(s) s = e^s`), and
//! its inverse is `exp(-x y^T) = I - ((1 - e^{-s})/s) x y^T = I + phi(-s) (-x) y^T`, the same
//! formula with `x` negated. Applying, inverting and taking the log-determinant cost `O(d)`.
//!
//! `phi` is evaluated by its Taylor series `sum_k s^k/(k+1)!` for `|s| < 0.1` (12 terms: truncation
//! below `2e-22` relative) and as `expm1(s)/s` elsewhere, so that both its value and its autodiff
//! derivative stay accurate near `s = 0`.
//!
//! ```
//! use genflow::linalg::rank_one::{expm1_over_s, rank_one_exp_dense};
//! use genflow::linalg::dense::Matrix;
//! let (x, y) = ([1.0, 2.0], [0.5, -0.25]); // s = 0: exp(x y^T) = I + x y^T
//! assert_eq!(expm1_over_s(0.0), 1.0);
//! let e = rank_one_exp_dense(&x, &y)?;
//! assert!(e.max_abs_diff(&Matrix::outer(&x, &y).expm()?)? < 1e-15);
//! # Ok::<(), genflow::Error>(())
//! ```

use crate::linalg::dense::Matrix;
use crate::{Error, Result};
use tch::Tensor;

/// Below this `|s|`, `phi(s)` is evaluated by its Taylor series.
pub const SERIES_THRESHOLD: f64 = 0.1;
/// Number of Taylor terms: `0.1^12 / 13! < 2e-22`.
const SERIES_TERMS: usize = 12;

/// The Taylor coefficients `1/(k+1)!`, `k = 0..SERIES_TERMS`, of `phi(s) = expm1(s)/s`.
fn series_coefficients() -> [f64; SERIES_TERMS] {
    let mut c = [1.0; SERIES_TERMS];
    for k in 1..SERIES_TERMS {
        c[k] = c[k - 1] / (k + 1) as f64;
    }
    c
}

/// `phi(s) = expm1(s)/s`, with `phi(0) = 1`, accurate to the rounding level for every `s`.
pub fn expm1_over_s(s: f64) -> f64 {
    if s.abs() < SERIES_THRESHOLD {
        series_coefficients()
            .iter()
            .rev()
            .fold(0.0, |acc, c| acc * s + c)
    } else {
        s.exp_m1() / s
    }
}

/// `phi(s) = expm1(s)/s` elementwise (differentiable, also at `s = 0`). Both branches are
/// evaluated at safe arguments so that neither produces a NaN gradient through the selection.
pub fn expm1_over_s_tensor(s: &Tensor) -> Result<Tensor> {
    let small = s.f_abs()?.f_lt(SERIES_THRESHOLD)?;
    let zero = s.f_zeros_like()?;
    let one = s.f_ones_like()?;
    let s_small = s.f_where_self(&small, &zero)?;
    let s_large = one.f_where_self(&small, s)?;
    let mut series = s.f_zeros_like()?;
    for c in series_coefficients().iter().rev() {
        series = series.f_mul(&s_small)?.f_add_scalar(*c)?;
    }
    let direct = s_large.f_expm1()?.f_div(&s_large)?;
    Ok(series.f_where_self(&small, &direct)?)
}

/// Checks that `x`, `y` and `v` share the last dimension `d`.
fn check_last_dim(tensors: &[&Tensor]) -> Result<()> {
    let dims: Vec<Option<i64>> = tensors.iter().map(|t| t.size().last().copied()).collect();
    if dims.iter().any(|d| d.is_none() || *d != dims[0]) {
        return Err(Error::shape(format!(
            "rank-one exponential: x, y (and v) need the same last dimension, got {:?}",
            tensors.iter().map(|t| t.size()).collect::<Vec<_>>()
        )));
    }
    Ok(())
}

/// `s = y^T x` over the last dimension (keeps it as size 1).
fn inner(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    Ok(x.f_mul(y)?.f_sum_dim_intlist(-1, true, x.kind())?)
}

/// `exp(x y^T) v = v + phi(s) (y^T v) x` over the last dimension, batched by broadcasting
/// (`x, y: [.., d]`, `v: [.., d]`); `O(d)` per vector, differentiable in `x`, `y` and `v`.
pub fn rank_one_exp_apply(x: &Tensor, y: &Tensor, v: &Tensor) -> Result<Tensor> {
    check_last_dim(&[x, y, v])?;
    let phi = expm1_over_s_tensor(&inner(x, y)?)?;
    Ok(v.f_add(&x.f_mul(&phi.f_mul(&inner(y, v)?)?)?)?)
}

/// `exp(-x y^T) v = v - ((1 - e^{-s})/s) (y^T v) x`, the inverse of [`rank_one_exp_apply`].
pub fn rank_one_exp_inverse(x: &Tensor, y: &Tensor, v: &Tensor) -> Result<Tensor> {
    rank_one_exp_apply(&x.f_neg()?, y, v)
}

/// `ln det exp(x y^T) = s = y^T x` over the last dimension (shape `[..]`).
pub fn rank_one_exp_logdet(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    check_last_dim(&[x, y])?;
    Ok(x.f_mul(y)?.f_sum_dim_intlist(-1, false, x.kind())?)
}

/// The dense `exp(x y^T) = I + phi(y^T x) x y^T` (plain `f64`); its inverse is
/// `rank_one_exp_dense(-x, y)`.
pub fn rank_one_exp_dense(x: &[f64], y: &[f64]) -> Result<Matrix> {
    if x.len() != y.len() {
        return Err(Error::shape(format!(
            "rank-one exponential: x has {} entries and y has {}; give vectors of equal length",
            x.len(),
            y.len()
        )));
    }
    let s: f64 = x.iter().zip(y).map(|(a, b)| a * b).sum();
    Matrix::outer(x, y).scale(expm1_over_s(s)).add_identity(1.0)
}
