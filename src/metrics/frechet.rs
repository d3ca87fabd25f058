//! The Frechet distance between two feature sets (Heusel et al., "GANs Trained by a Two Time-Scale
//! Update Rule Converge to a Local Nash Equilibrium", NeurIPS 2017, section "Evaluating GANs"; the
//! distance itself is Dowson & Landau 1982): the 2-Wasserstein distance squared between the
//! Gaussians `N(m1, S1)` and `N(m2, S2)` fitted to the two sets,
//!
//! ```text
//! FD = |m1 - m2|^2 + tr(S1) + tr(S2) - 2 tr((S1^{1/2} S2 S1^{1/2})^{1/2})
//! ```
//!
//! (SPEC section 6). The usual code takes `sqrtm(S1 S2)` of the non-symmetric product, which loses
//! accuracy (and picks up imaginary parts) when the covariances are near-singular: few samples, or
//! features of low rank. Here the last term is computed through symmetric matrices only, in `f64`:
//!
//! 1. `S1 = V diag(w) V^T` (symmetric eigendecomposition), `S1^{1/2} = V diag(sqrt(w)) V^T`;
//! 2. `M = S1^{1/2} S2 S1^{1/2}`, symmetric positive semidefinite (symmetrised against rounding);
//! 3. `tr(M^{1/2}) = sum_i sqrt(lambda_i)` over the eigenvalues `lambda_i` of `M`.
//!
//! With `A = S1^{1/2}` and `B = S1^{1/2} S2`, `S1 S2 = AB` and `M = BA` have the same eigenvalues, so
//! the trace equals the textbook `tr sqrt(S1 S2)` wherever that square root exists. The zero
//! eigenvalues of rank-deficient matrices come out of the eigensolver as rounding noise of either
//! sign (`|lambda| ~ 1e-16 |M|`), whose square roots would add `d 1e-8 |M|^{1/2}`; eigenvalues at or
//! below `d eps max|lambda|` (numpy's `matrix_rank` tolerance) are therefore taken as zero, in both
//! steps. The distance is then accurate to rounding of the trace scale `tr S1 + tr S2`, with
//! rank-deficient covariances too (`tests/metrics.rs`, `tests/quality.rs`: a set against itself).
//!
//! Covariances are unbiased (`1 / (n - 1)`). The estimate is biased upward for small `n` (Chong &
//! Forsyth 2020), so a [`FrechetReport`] always carries both sample sizes: compare numbers only at
//! equal `n`.

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::feature_matrix;
use crate::{Error, Result};

const METRIC: &str = "frechet distance";

/// Relative asymmetry `max |C - C^T| / max |C|` above which a covariance is rejected.
const SYMMETRY_TOLERANCE: f64 = 1e-8;
/// Relative size `-lambda_min / lambda_max` of a negative eigenvalue above which a covariance is
/// rejected as not positive semidefinite.
const PSD_TOLERANCE: f64 = 1e-8;

/// The mean and unbiased covariance of a feature set, in `f64` on the CPU, with the number of
/// samples they came from: what the Frechet distance needs of one side, so that the statistics of a
/// fixed real data set can be computed once and reused.
///
/// ```
/// use genflow::metrics::{frechet_distance_from_stats, FeatureStats};
/// use tch::Tensor;
///
/// let x = Tensor::from_slice(&[0.0f64, 0.0, 2.0, 0.0, 0.0, 2.0, 2.0, 2.0]).reshape([4, 2]);
/// let stats = FeatureStats::from_features(&x)?;
/// assert_eq!(stats.n(), 4);
/// assert_eq!(Vec::<f64>::try_from(stats.mean())?, vec![1.0, 1.0]);
/// // unbiased: each coordinate takes 0, 2, 0, 2, so its variance is 4 / 3
/// assert!((stats.cov().double_value(&[0, 0]) - 4.0 / 3.0).abs() < 1e-15);
///
/// // the same statistics shifted by (3, 4): FD = |(3, 4)|^2 = 25
/// let shifted = FeatureStats::new(&(stats.mean() + Tensor::from_slice(&[3.0f64, 4.0])), stats.cov(), 4)?;
/// let report = frechet_distance_from_stats(&stats, &shifted)?;
/// assert!((report.fd - 25.0).abs() < 1e-12);
/// # Ok::<(), genflow::Error>(())
/// ```
#[derive(Debug)]
pub struct FeatureStats {
    mean: Tensor,
    cov: Tensor,
    n: usize,
}

impl Clone for FeatureStats {
    fn clone(&self) -> Self {
        FeatureStats {
            mean: self.mean.copy(),
            cov: self.cov.copy(),
            n: self.n,
        }
    }
}

impl FeatureStats {
    /// The mean `m = (1/n) sum_i x_i` and unbiased covariance
    /// `S = (1/(n-1)) sum_i (x_i - m)(x_i - m)^T` of the features `[n, d]` (any float kind, any
    /// device), computed in `f64`.
    ///
    /// Errors when `features` is not 2-D, has fewer than 2 rows, or holds NaN or infinite values.
    pub fn from_features(features: &Tensor) -> Result<Self> {
        Self::from_named(features, "features")
    }

    fn from_named(features: &Tensor, name: &str) -> Result<Self> {
        let x = feature_matrix(features, METRIC, name, 2)?;
        let n = x.size()[0] as usize;
        let mean = x.f_mean_dim(0, false, Kind::Double)?;
        let centred = x.f_sub(&mean.f_unsqueeze(0)?)?;
        let cov = centred.f_tr()?.f_matmul(&centred)? / (n as f64 - 1.0);
        // exact symmetry whatever the matrix product did
        let cov = (&cov + cov.f_tr()?) * 0.5;
        Ok(FeatureStats {
            mean: mean.f_to_device(Device::Cpu)?,
            cov: cov.f_to_device(Device::Cpu)?,
            n,
        })
    }

    /// Statistics given directly: a mean `[d]`, a symmetric positive semidefinite covariance `[d, d]`
    /// (any float kinds; stored as `f64` on the CPU, symmetrised) and the number `n >= 2` of samples
    /// they were estimated from (reported beside the distance).
    ///
    /// Errors for mismatched shapes, NaN or infinite values, `n < 2`, a covariance that is not
    /// symmetric (relative asymmetry above 1e-8) or has an eigenvalue below `-1e-8` times the largest.
    pub fn new(mean: &Tensor, cov: &Tensor, n: usize) -> Result<Self> {
        let m_size = mean.size();
        let c_size = cov.size();
        if m_size.len() != 1 || m_size[0] < 1 {
            return Err(Error::shape(format!(
                "{METRIC}: the mean must be a 1-D tensor [d] with d >= 1, got shape {m_size:?}"
            )));
        }
        let d = m_size[0];
        if c_size != [d, d] {
            return Err(Error::shape(format!(
                "{METRIC}: a mean of {d} features needs a covariance of shape [{d}, {d}], got \
                 {c_size:?}"
            )));
        }
        if n < 2 {
            return Err(Error::shape(format!(
                "{METRIC}: statistics from n = {n} sample(s); an unbiased covariance needs n >= 2"
            )));
        }
        let mean = super::finite_f64(mean, METRIC, "the mean")?.f_to_device(Device::Cpu)?;
        let cov = super::finite_f64(cov, METRIC, "the covariance")?.f_to_device(Device::Cpu)?;
        let cov = symmetric(&cov, "the covariance")?;
        let w = cov.f_linalg_eigvalsh("L")?;
        let (lo, hi) = (w.f_double_value(&[0])?, w.f_double_value(&[d - 1])?);
        if lo < -PSD_TOLERANCE * hi.max(f64::MIN_POSITIVE) {
            return Err(Error::shape(format!(
                "{METRIC}: the covariance is not positive semidefinite (smallest eigenvalue {lo:e}, \
                 largest {hi:e}); pass a covariance estimated from data"
            )));
        }
        Ok(FeatureStats { mean, cov, n })
    }

    /// The mean `[d]`, `f64` on the CPU.
    pub fn mean(&self) -> &Tensor {
        &self.mean
    }

    /// The unbiased covariance `[d, d]`, `f64` on the CPU, exactly symmetric.
    pub fn cov(&self) -> &Tensor {
        &self.cov
    }

    /// The number of samples the statistics came from.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The feature dimension `d`.
    pub fn dim(&self) -> usize {
        self.mean.size()[0] as usize
    }
}

/// The Frechet distance and its parts. `fd = mean_term + trace_a + trace_b - 2 trace_sqrt_product`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FrechetReport {
    /// The Frechet distance. Mathematically `>= 0`; it is not clipped, so a distance between
    /// (nearly) equal statistics can come out as a rounding-sized negative number.
    pub fd: f64,
    /// `|m1 - m2|^2`.
    pub mean_term: f64,
    /// `tr(S1)`.
    pub trace_a: f64,
    /// `tr(S2)`.
    pub trace_b: f64,
    /// `tr((S1^{1/2} S2 S1^{1/2})^{1/2})`.
    pub trace_sqrt_product: f64,
    /// Number of samples behind the first statistics.
    pub n_a: usize,
    /// Number of samples behind the second statistics.
    pub n_b: usize,
    /// Feature dimension `d`.
    pub dim: usize,
}

/// The Frechet distance between two feature sets `[n_a, d]` and `[n_b, d]` (any float kinds and
/// devices; computed in `f64`), from their means and unbiased covariances:
/// `FD = |m1 - m2|^2 + tr(S1) + tr(S2) - 2 tr((S1^{1/2} S2 S1^{1/2})^{1/2})` (Heusel et al. 2017;
/// module docs for the symmetric eigen route).
///
/// Errors when either set is not 2-D, has fewer than 2 samples, holds NaN or infinite values, or when
/// the feature dimensions differ.
///
/// ```
/// use genflow::metrics::frechet_distance;
/// use tch::{Kind, Tensor};
///
/// tch::manual_seed(0);
/// let a = Tensor::randn([500, 8], (Kind::Double, tch::Device::Cpu));
/// // a set against itself: 0 up to rounding
/// let same = frechet_distance(&a, &a)?;
/// assert!(same.fd.abs() < 1e-9 * (same.trace_a + same.trace_b));
/// // shifting every feature by 1 adds |(1, ..., 1)|^2 = 8 and changes nothing else
/// let moved = frechet_distance(&a, &(&a + 1.0))?;
/// assert!((moved.fd - 8.0).abs() < 1e-9);
/// assert_eq!((moved.n_a, moved.n_b, moved.dim), (500, 500, 8));
/// # Ok::<(), genflow::Error>(())
/// ```
pub fn frechet_distance(features_a: &Tensor, features_b: &Tensor) -> Result<FrechetReport> {
    let (da, db) = (features_a.size(), features_b.size());
    if da.len() == 2 && db.len() == 2 && da[1] != db[1] {
        return Err(dim_mismatch(da[1], db[1]));
    }
    let a = FeatureStats::from_named(features_a, "features_a")?;
    let b = FeatureStats::from_named(features_b, "features_b")?;
    frechet_distance_from_stats(&a, &b)
}

/// The Frechet distance between two sets of statistics (e.g. generated features against cached
/// statistics of the real data): the formula of [`frechet_distance`].
///
/// Errors when the feature dimensions differ.
pub fn frechet_distance_from_stats(a: &FeatureStats, b: &FeatureStats) -> Result<FrechetReport> {
    if a.dim() != b.dim() {
        return Err(dim_mismatch(a.dim() as i64, b.dim() as i64));
    }
    let diff = a.mean.f_sub(&b.mean)?;
    let mean_term = diff.f_dot(&diff)?.f_double_value(&[])?;
    let trace_a = a.cov.f_trace()?.f_double_value(&[])?;
    let trace_b = b.cov.f_trace()?.f_double_value(&[])?;
    let trace_sqrt_product = trace_sqrt_product_unchecked(&a.cov, &b.cov)?;
    Ok(FrechetReport {
        fd: mean_term + trace_a + trace_b - 2.0 * trace_sqrt_product,
        mean_term,
        trace_a,
        trace_b,
        trace_sqrt_product,
        n_a: a.n,
        n_b: b.n,
        dim: a.dim(),
    })
}

/// The principal square root `S^{1/2}` of a symmetric positive semidefinite matrix `[d, d]` (any
/// float kind and device), as `f64` on the CPU: `V diag(sqrt(max(w, 0))) V^T` from the symmetric
/// eigendecomposition `S = V diag(w) V^T` (Higham, *Functions of Matrices*, 2008, section 6.1).
/// Negative eigenvalues (rounding noise of a singular matrix) are clipped to 0, so the result is the
/// square root of the nearest PSD matrix `V diag(max(w, 0)) V^T`.
///
/// Errors when `s` is not square, holds NaN or infinite values, or is not symmetric (relative
/// asymmetry above 1e-8).
///
/// ```
/// use genflow::metrics::sqrtm_psd;
/// use tch::Tensor;
///
/// // [[5, 4], [4, 5]] = R^2 with R = [[2, 1], [1, 2]]
/// let s = Tensor::from_slice(&[5.0f64, 4.0, 4.0, 5.0]).reshape([2, 2]);
/// let r = sqrtm_psd(&s)?;
/// let expected = Tensor::from_slice(&[2.0f64, 1.0, 1.0, 2.0]).reshape([2, 2]);
/// assert!((r - expected).abs().max().double_value(&[]) < 1e-14);
/// # Ok::<(), genflow::Error>(())
/// ```
pub fn sqrtm_psd(s: &Tensor) -> Result<Tensor> {
    let s = square_symmetric(s, "the matrix")?;
    sqrtm_psd_unchecked(&s)
}

/// `tr((S1^{1/2} S2 S1^{1/2})^{1/2}) = sum_i sqrt(max(lambda_i, 0))`, `lambda_i` the eigenvalues of
/// the symmetric PSD matrix `S1^{1/2} S2 S1^{1/2}` (module docs), for two symmetric PSD matrices
/// `[d, d]` (any float kinds and devices), in `f64`. It equals `tr sqrt(S1 S2)`, the cross term of the
/// Frechet distance.
///
/// Errors when either matrix is not square, holds NaN or infinite values or is not symmetric, or when
/// their sizes differ.
///
/// ```
/// use genflow::metrics::trace_sqrt_product;
/// use tch::Tensor;
///
/// // commuting diagonal matrices: tr sqrt(diag(a b)) = sum sqrt(a_i b_i) = sqrt(4) + sqrt(9) + 0
/// let s1 = Tensor::from_slice(&[1.0f64, 9.0, 0.0]).diag(0);
/// let s2 = Tensor::from_slice(&[4.0f64, 1.0, 5.0]).diag(0);
/// assert!((trace_sqrt_product(&s1, &s2)? - 5.0).abs() < 1e-12);
/// # Ok::<(), genflow::Error>(())
/// ```
pub fn trace_sqrt_product(s1: &Tensor, s2: &Tensor) -> Result<f64> {
    let a = square_symmetric(s1, "the first matrix")?;
    let b = square_symmetric(s2, "the second matrix")?;
    if a.size() != b.size() {
        return Err(Error::shape(format!(
            "{METRIC}: the matrices have different sizes {:?} and {:?}; both must be d x d for \
             the same d",
            a.size(),
            b.size()
        )));
    }
    trace_sqrt_product_unchecked(&a, &b)
}

/// Eigenvalues `w` of a symmetric `d x d` matrix with those at or below the eigensolver's
/// rounding noise, `d eps max|w|` (numpy's `matrix_rank` tolerance), set to zero: the zero
/// eigenvalues of a rank-deficient matrix come out as noise of either sign, and their square roots
/// would add up to about `d sqrt(eps max|w|)`.
fn without_noise(w: &Tensor) -> Result<Tensor> {
    let d = w.size().first().copied().unwrap_or(1) as f64;
    let floor = d * f64::EPSILON * w.f_abs()?.f_max()?.f_double_value(&[])?;
    Ok(w.f_where_self(&w.f_gt(floor)?, &w.f_zeros_like()?)?)
}

/// `V diag(sqrt(w)) V^T` of a symmetric `f64` CPU matrix, with its eigenvalues `w` cleared of
/// rounding noise ([`without_noise`]).
fn sqrtm_psd_unchecked(s: &Tensor) -> Result<Tensor> {
    let (w, v) = s.f_linalg_eigh("L")?;
    let root = without_noise(&w)?.f_sqrt()?;
    let scaled = v.f_mul(&root.f_unsqueeze(0)?)?;
    let r = scaled.f_matmul(&v.f_tr()?)?;
    Ok((&r + r.f_tr()?) * 0.5)
}

/// `sum_i sqrt(lambda_i)` over the eigenvalues of `S1^{1/2} S2 S1^{1/2}` cleared of rounding noise
/// ([`without_noise`]), for symmetric `f64` CPU matrices of equal size.
fn trace_sqrt_product_unchecked(s1: &Tensor, s2: &Tensor) -> Result<f64> {
    let r = sqrtm_psd_unchecked(s1)?;
    let m = r.f_matmul(s2)?.f_matmul(&r)?;
    let m = (&m + m.f_tr()?) * 0.5;
    let lambda = m.f_linalg_eigvalsh("L")?;
    Ok(without_noise(&lambda)?
        .f_sqrt()?
        .f_sum(Kind::Double)?
        .f_double_value(&[])?)
}

/// `s` as a finite symmetric `f64` CPU matrix (exactly symmetrised), or an error naming `name`.
fn square_symmetric(s: &Tensor, name: &str) -> Result<Tensor> {
    let size = s.size();
    if size.len() != 2 || size[0] != size[1] || size[0] < 1 {
        return Err(Error::shape(format!(
            "{METRIC}: {name} must be a square matrix [d, d] with d >= 1, got shape {size:?}"
        )));
    }
    let s = super::finite_f64(s, METRIC, name)?.f_to_device(Device::Cpu)?;
    symmetric(&s, name)
}

/// `(S + S^T) / 2` after checking that `S` (finite `f64`) is symmetric to a relative 1e-8.
fn symmetric(s: &Tensor, name: &str) -> Result<Tensor> {
    let st = s.f_tr()?;
    let asym = s.f_sub(&st)?.f_abs()?.f_max()?.f_double_value(&[])?;
    let scale = s.f_abs()?.f_max()?.f_double_value(&[])?;
    if asym > SYMMETRY_TOLERANCE * scale {
        return Err(Error::shape(format!(
            "{METRIC}: {name} is not symmetric (max |S - S^T| = {asym:e} against max |S| = \
             {scale:e}); pass a covariance matrix"
        )));
    }
    Ok((s + st) * 0.5)
}

/// The error for feature sets of different dimensions.
fn dim_mismatch(da: i64, db: i64) -> Error {
    Error::shape(format!(
        "{METRIC}: feature dimensions differ ({da} against {db}); both sets must come from the same \
         feature layer"
    ))
}
