//! The kernel inception distance, KID (Binkowski, Sutherland, Arbel & Gretton, "Demystifying MMD
//! GANs", ICLR 2018, section 4 and appendix B): the squared maximum mean discrepancy between two
//! feature sets under the cubic polynomial kernel
//!
//! ```text
//! k(x, y) = (x.y / d + 1)^3        (d = feature dimension)
//! ```
//!
//! estimated without bias (Gretton et al., "A Kernel Two-Sample Test", JMLR 2012, Lemma 6) on
//! subsets `X`, `Y` of `m` samples each:
//!
//! ```text
//! MMD^2 = sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} k(y_i, y_j) / (m (m-1))
//!         - 2 sum_{i,j} k(x_i, y_j) / m^2
//! ```
//!
//! (SPEC section 6). As in the reference code of Binkowski et al. (and torch-fidelity), the subsets
//! are drawn without replacement, independently for each of `subsets` repetitions, and the report
//! gives the mean and the (population) standard deviation of the `MMD^2` values. The estimator is
//! unbiased, so for two samples of one distribution it scatters around 0 and can be negative: it is
//! never clipped.
//!
//! Kernels are computed as batched matrix products in `f64`, several subsets at a time, with at most
//! `2^22` kernel entries (32 MiB) per batched product.

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use tch::{Kind, Tensor};

use super::feature_matrix;
use crate::{Error, Result};

const METRIC: &str = "KID";

/// Kernel entries (`f64`) per batched kernel matrix: bounds the memory of one batch of subsets.
const KERNEL_BLOCK: usize = 1 << 22;

/// How KID draws its subsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct KidOptions {
    /// Samples per subset `m` (default 1000); the smaller set's size when that is smaller.
    pub subset_size: usize,
    /// Number of subsets (default 100).
    pub subsets: usize,
    /// Seed of the subset draws: equal seeds give equal results.
    pub seed: u64,
}

impl Default for KidOptions {
    fn default() -> Self {
        KidOptions {
            subset_size: 1000,
            subsets: 100,
            seed: 0,
        }
    }
}

/// KID over subsets: mean and standard deviation of the unbiased `MMD^2` values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KidReport {
    /// Mean of `MMD^2` over the subsets (not clipped: it can be negative).
    pub mean: f64,
    /// Population standard deviation of `MMD^2` over the subsets (0 for a single subset).
    pub std: f64,
    /// The subset size `m` used: `min(options.subset_size, n_a, n_b)`.
    pub subset_size: usize,
    /// The number of subsets evaluated (1 when both sets have exactly `m` samples, since every subset
    /// is then the whole set).
    pub subsets: usize,
    /// Samples in the first set.
    pub n_a: usize,
    /// Samples in the second set.
    pub n_b: usize,
    /// Feature dimension `d`.
    pub dim: usize,
    /// The `MMD^2` of each subset, in draw order.
    pub values: Vec<f64>,
}

/// KID between two feature sets `[n_a, d]` and `[n_b, d]` (any float kinds and devices; computed in
/// `f64` on the device of `features_a`): the unbiased `MMD^2` with the cubic kernel
/// `(x.y/d + 1)^3` on `options.subsets` pairs of random subsets of `m = min(subset_size, n_a, n_b)`
/// samples each (module docs; Binkowski et al. 2018).
///
/// Errors when either set is not 2-D or holds NaN or infinite values, when the dimensions differ,
/// when `m < 2`, or when `options.subsets` is 0.
///
/// ```
/// use genflow::metrics::{kid, KidOptions};
/// use tch::{Kind, Tensor};
///
/// tch::manual_seed(0);
/// let real = Tensor::randn([600, 16], (Kind::Float, tch::Device::Cpu));
/// let same = Tensor::randn([600, 16], (Kind::Float, tch::Device::Cpu));
/// let shifted = Tensor::randn([600, 16], (Kind::Float, tch::Device::Cpu)) + 1.0;
/// let options = KidOptions { subset_size: 200, subsets: 20, seed: 1 };
/// let near = kid(&real, &same, &options)?;
/// let far = kid(&real, &shifted, &options)?;
/// assert_eq!((near.subset_size, near.subsets, near.values.len()), (200, 20, 20));
/// assert!(near.mean.abs() < 3.0 * near.std + 0.05);
/// assert!(far.mean > 10.0 * near.mean.abs() && far.mean > 0.5);
/// # Ok::<(), genflow::Error>(())
/// ```
pub fn kid(features_a: &Tensor, features_b: &Tensor, options: &KidOptions) -> Result<KidReport> {
    let a = feature_matrix(features_a, METRIC, "features_a", 1)?;
    let b = feature_matrix(features_b, METRIC, "features_b", 1)?.f_to_device(a.device())?;
    let (n_a, d) = (a.size()[0] as usize, a.size()[1] as usize);
    let n_b = b.size()[0] as usize;
    if b.size()[1] as usize != d {
        return Err(dim_mismatch(d, b.size()[1] as usize));
    }
    if options.subsets == 0 {
        return Err(Error::config(format!(
            "{METRIC}: subsets = 0; evaluate at least 1 subset (default 100)"
        )));
    }
    let m = options.subset_size.min(n_a).min(n_b);
    if m < 2 {
        return Err(Error::shape(format!(
            "{METRIC}: subsets of m = {m} sample(s) (subset_size {}, n_a {n_a}, n_b {n_b}); the \
             unbiased MMD^2 needs m >= 2 samples on each side",
            options.subset_size
        )));
    }
    let subsets = if m == n_a && m == n_b {
        1
    } else {
        options.subsets
    };
    let mut rng = StdRng::seed_from_u64(options.seed);
    let batch = (KERNEL_BLOCK / (m * m)).max(1);
    let mut values = Vec::with_capacity(subsets);
    while values.len() < subsets {
        let count = batch.min(subsets - values.len());
        let mut draw = |n: usize| -> Vec<i64> {
            (0..count)
                .flat_map(|_| rand::seq::index::sample(&mut rng, n, m).into_iter())
                .map(|i| i as i64)
                .collect()
        };
        let (ia, ib) = (draw(n_a), draw(n_b));
        let shape = [count as i64, m as i64, d as i64];
        let x = a
            .f_index_select(0, &Tensor::from_slice(&ia).f_to_device(a.device())?)?
            .f_reshape(shape)?;
        let y = b
            .f_index_select(0, &Tensor::from_slice(&ib).f_to_device(a.device())?)?
            .f_reshape(shape)?;
        values.extend(batched_mmd2(&x, &y)?);
    }
    let mean = values.iter().sum::<f64>() / subsets as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / subsets as f64;
    Ok(KidReport {
        mean,
        std: var.sqrt(),
        subset_size: m,
        subsets,
        n_a,
        n_b,
        dim: d,
        values,
    })
}

/// The unbiased `MMD^2` with the cubic kernel `(x.y/d + 1)^3` between two whole feature sets
/// `[m_a, d]` and `[m_b, d]` (no subsets; any float kinds and devices; `f64`):
/// `sum_{i!=j} k(x_i,x_j)/(m_a(m_a-1)) + sum_{i!=j} k(y_i,y_j)/(m_b(m_b-1)) - 2 sum_{i,j} k(x_i,y_j)/(m_a m_b)`
/// (Gretton et al. 2012, Lemma 6; equal to one KID subset when `m_a = m_b = m`).
///
/// Its memory is that of the three kernel matrices, `8 (m_a^2 + m_b^2 + m_a m_b)` bytes; use [`kid`]
/// for large sets.
///
/// Errors when either set is not 2-D, has fewer than 2 samples or holds NaN or infinite values, or
/// when the dimensions differ.
///
/// ```
/// use genflow::metrics::mmd2_unbiased;
/// use tch::Tensor;
///
/// // 1-D, d = 1: k(x, y) = (x y + 1)^3; X = {0, 1}, Y = {0, -1}
/// // k(0,1) = 1 within X, k(0,-1) = 1 within Y, cross terms k(0,0) = 1, k(0,-1) = 1, k(1,0) = 1,
/// // k(1,-1) = 0: MMD^2 = 2/2 + 2/2 - 2 * 3/4 = 0.5
/// let x = Tensor::from_slice(&[0.0f64, 1.0]).reshape([2, 1]);
/// let y = Tensor::from_slice(&[0.0f64, -1.0]).reshape([2, 1]);
/// assert!((mmd2_unbiased(&x, &y)? - 0.5).abs() < 1e-15);
/// # Ok::<(), genflow::Error>(())
/// ```
pub fn mmd2_unbiased(features_a: &Tensor, features_b: &Tensor) -> Result<f64> {
    let a = feature_matrix(features_a, METRIC, "features_a", 2)?;
    let b = feature_matrix(features_b, METRIC, "features_b", 2)?.f_to_device(a.device())?;
    let d = a.size()[1] as usize;
    if b.size()[1] as usize != d {
        return Err(dim_mismatch(d, b.size()[1] as usize));
    }
    let (ma, mb) = (a.size()[0] as f64, b.size()[0] as f64);
    let (x, y) = (a.f_unsqueeze(0)?, b.f_unsqueeze(0)?);
    let within = |z: &Tensor, m: f64| -> Result<f64> {
        let (total, diag) = kernel_sums(z, z, d)?;
        Ok((total.f_double_value(&[0])? - diag.f_double_value(&[0])?) / (m * (m - 1.0)))
    };
    let (cross, _) = kernel_sums(&x, &y, d)?;
    Ok(within(&x, ma)? + within(&y, mb)? - 2.0 * cross.f_double_value(&[0])? / (ma * mb))
}

/// The unbiased `MMD^2` of each batch element of `x`, `y` `[c, m, d]` (`f64`).
fn batched_mmd2(x: &Tensor, y: &Tensor) -> Result<Vec<f64>> {
    let (m, d) = (x.size()[1] as f64, x.size()[2] as usize);
    let (sxx, dxx) = kernel_sums(x, x, d)?;
    let (syy, dyy) = kernel_sums(y, y, d)?;
    let (sxy, _) = kernel_sums(x, y, d)?;
    let within = (sxx - dxx + syy - dyy) / (m * (m - 1.0));
    let mmd = within - sxy * (2.0 / (m * m));
    Ok(Vec::<f64>::try_from(&mmd)?)
}

/// For `x` `[c, p, d]` and `y` `[c, q, d]`: the sum of all entries of each kernel matrix
/// `K = (x y^T / d + 1)^3` `[c, p, q]`, and the sum of its diagonal entries (`[c]` each).
fn kernel_sums(x: &Tensor, y: &Tensor, d: usize) -> Result<(Tensor, Tensor)> {
    let k = (x.f_matmul(&y.f_transpose(1, 2)?)? / d as f64 + 1.0).f_pow_tensor_scalar(3)?;
    let total = k.f_sum_dim_intlist([1i64, 2].as_slice(), false, Kind::Double)?;
    let diag = k
        .f_diagonal(0, 1, 2)?
        .f_sum_dim_intlist([1i64].as_slice(), false, Kind::Double)?;
    Ok((total, diag))
}

/// The error for feature sets of different dimensions.
fn dim_mismatch(da: usize, db: usize) -> Error {
    Error::shape(format!(
        "{METRIC}: feature dimensions differ ({da} against {db}); both sets must come from the same \
         feature layer"
    ))
}
