//! The principal matrix logarithm by inverse scaling and squaring, without a Schur form
//! (Kenney & Laub 1989; Higham, *Functions of Matrices*, 2008, section 11.5).
//!
//! `log(A) = 2^k log(A^{1/2^k})`: take square roots until `|A^{1/2^k} - I|_1 <= theta`, then
//! evaluate `log(I + X)` by the `[m/m]` Pade approximant in partial fractions,
//! `r_m(X) = sum_j w_j X (I + t_j X)^{-1}` with Gauss-Legendre nodes `t_j` and weights `w_j` on
//! `[0, 1]` (Higham 2008, eq. 11.18). Kenney and Laub's bound
//! `|r_m(X) - log(I + X)| <= |r_m(-|X|) - log(1 - |X|)|` gives, for `m = 8` and `|X|_1 <= 1/4`, an
//! error below `3e-16` (checked in `tests/linalg_logm.rs`).
//!
//! Square roots use the product form of the Denman-Beavers iteration (Higham 2008, eq. 6.17):
//! `M_0 = Y_0 = A`, `Y_{k+1} = Y_k (I + M_k^{-1}) / 2`, `M_{k+1} = (I + (M_k + M_k^{-1}) / 2) / 2`,
//! so `Y_k -> A^{1/2}` and `M_k -> I` quadratically. Defined when `A` has no eigenvalue on the
//! closed negative real axis (where the principal logarithm does not exist).
//!
//! Batches `[.., n, n]` take square roots per matrix (masked); the tensor version is differentiable.
//!
//! ```
//! use genflow::linalg::dense::Matrix;
//! let b = Matrix::from_rows(&[vec![2.0, 1.0], vec![1.0, 3.0]])?;
//! // ln det B = tr ln B
//! assert!((b.logm()?.trace()? - b.log_abs_det()?).abs() < 1e-14);
//! # Ok::<(), genflow::Error>(())
//! ```

use crate::linalg::batch::{finite_max_norm, map_matrices, SquareBatch};
use crate::linalg::dense::Matrix;
use crate::{Error, Result};
use tch::Tensor;

/// Degree `m` of the Pade approximant of `log(I + X)`.
pub const LOG_PADE_DEGREE: usize = 8;
/// Square roots are taken until `|X|_1 = |A^{1/2^k} - I|_1 <= LOG_PADE_THETA`.
pub const LOG_PADE_THETA: f64 = 0.25;
/// At most this many square roots (each halves `log A`; 64 covers any finite spectrum).
const MAX_SQUARE_ROOTS: usize = 64;
/// At most this many Denman-Beavers iterations per square root.
const MAX_SQRT_ITERATIONS: usize = 100;

/// The `m`-point Gauss-Legendre rule on `[0, 1]`: `(nodes, weights)`, exact for polynomials of
/// degree up to `2m - 1`. Nodes by Newton's method on the Legendre polynomial `P_m`.
pub fn gauss_legendre(m: usize) -> (Vec<f64>, Vec<f64>) {
    let mut nodes = Vec::with_capacity(m);
    let mut weights = Vec::with_capacity(m);
    for i in 0..m {
        let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (m as f64 + 0.5)).cos();
        for _ in 0..100 {
            let (p, dp) = legendre(m, x);
            x -= p / dp;
            if (p / dp).abs() < 1e-16 {
                break;
            }
        }
        let (_, dp) = legendre(m, x);
        nodes.push((1.0 + x) / 2.0);
        weights.push(1.0 / ((1.0 - x * x) * dp * dp));
    }
    (nodes, weights)
}

/// `(P_m(x), P_m'(x))` by the recurrence `k P_k = (2k-1) x P_{k-1} - (k-1) P_{k-2}` and
/// `(x^2 - 1) P_m' = m (x P_m - P_{m-1})` (for `|x| < 1`).
fn legendre(m: usize, x: f64) -> (f64, f64) {
    let (mut p, mut prev) = (1.0, 0.0);
    for k in 1..=m {
        let next = ((2 * k - 1) as f64 * x * p - (k - 1) as f64 * prev) / k as f64;
        prev = p;
        p = next;
    }
    (p, m as f64 * (x * p - prev) / (x * x - 1.0))
}

/// `A^{1/2}` by the product-form Denman-Beavers iteration; one iteration past
/// `|M_k - I|_1 <= sqrt(u)` reaches the rounding level, as convergence is quadratic.
pub(crate) fn sqrtm_generic<M: SquareBatch + Clone>(a: &M) -> Result<M> {
    let tol = a.unit_roundoff().sqrt();
    let (mut m, mut y) = (a.clone(), a.clone());
    let mut converged = false;
    for _ in 0..MAX_SQRT_ITERATIONS {
        let m_inv = m.inverse()?;
        y = y.matmul(&m_inv.add_identity(1.0)?)?.scale(0.5)?;
        m = m.add(&m_inv)?.scale(0.5)?.add_identity(1.0)?.scale(0.5)?;
        if converged {
            return Ok(y);
        }
        let residual = finite_max_norm(&m.add_identity(-1.0)?.norms1()?, "a square root")
            .map_err(|_| no_logarithm())?;
        converged = residual <= tol;
    }
    Err(no_logarithm())
}

fn no_logarithm() -> Error {
    Error::NonFinite(
        "the matrix square root did not converge: the matrix has an eigenvalue on or near the \
         closed negative real axis, where the principal square root and logarithm do not exist"
            .into(),
    )
}

/// `log(I + X)` by the partial-fraction Pade approximant of degree [`LOG_PADE_DEGREE`].
fn log1p_pade<M: SquareBatch>(x: &M) -> Result<M> {
    let (nodes, weights) = gauss_legendre(LOG_PADE_DEGREE);
    let mut sum: Option<M> = None;
    for (t, w) in nodes.into_iter().zip(weights) {
        let term = x.scale(t)?.add_identity(1.0)?.solve(x)?.scale(w)?;
        sum = Some(match sum {
            Some(s) => s.add(&term)?,
            None => term,
        });
    }
    sum.ok_or_else(|| Error::config("the Pade degree of the logarithm must be at least 1"))
}

/// Inverse scaling and squaring for any [`SquareBatch`].
pub(crate) fn logm_generic<M: SquareBatch + Clone>(a: &M) -> Result<M> {
    let mut x = a.clone();
    let mut roots: Vec<u32> = Vec::new();
    for _ in 0..=MAX_SQUARE_ROOTS {
        let dist = x.add_identity(-1.0)?.norms1()?;
        finite_max_norm(&dist, "the matrix logarithm")?;
        let mask: Vec<bool> = dist.iter().map(|&d| d > LOG_PADE_THETA).collect();
        roots.resize(mask.len(), 0);
        if !mask.iter().any(|&b| b) {
            let factors: Vec<f64> = roots.iter().map(|&k| 2f64.powi(k as i32)).collect();
            return log1p_pade(&x.add_identity(-1.0)?)?.scale_each(&factors);
        }
        x = sqrtm_generic(&x)?.select(&mask, &x)?;
        roots
            .iter_mut()
            .zip(&mask)
            .for_each(|(k, &b)| *k += u32::from(b));
    }
    Err(no_logarithm())
}

/// The principal `log(A)` of each matrix of a `[.., n, n]` `Float` or `Double` tensor
/// (differentiable). Fails for matrices with an eigenvalue on the closed negative real axis.
pub fn logm(a: &Tensor) -> Result<Tensor> {
    map_matrices(a, "the matrix logarithm", logm_generic)
}

/// The principal square root `A^{1/2}` of each matrix of a `[.., n, n]` tensor (differentiable).
pub fn sqrtm(a: &Tensor) -> Result<Tensor> {
    map_matrices(a, "the matrix square root", sqrtm_generic)
}

impl Matrix {
    /// The principal `log(A)`, the plain `f64` version of [`logm`].
    pub fn logm(&self) -> Result<Matrix> {
        self.require_square("the matrix logarithm")?;
        logm_generic(self)
    }

    /// The principal square root `A^{1/2}`, the plain `f64` version of [`sqrtm`].
    pub fn sqrtm(&self) -> Result<Matrix> {
        self.require_square("the matrix square root")?;
        sqrtm_generic(self)
    }
}
