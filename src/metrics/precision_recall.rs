//! Precision and recall of a generative model (Kynkaanniemi, Karras, Laine, Lehtinen & Aila,
//! "Improved Precision and Recall Metric for Assessing Generative Models", NeurIPS 2019, section 2,
//! equations 1-2), with `k = 3` nearest neighbours (SPEC section 6).
//!
//! The manifold of a feature set `Phi` is the union of the closed balls around each of its features
//! with radius the distance to that feature's `k`-th nearest neighbour in `Phi` (itself excluded):
//!
//! ```text
//! f(phi, Phi) = 1  if  |phi - phi'| <= |phi' - NN_k(phi', Phi)|  for some phi' in Phi,  else 0
//! precision = (1/|Phi_g|) sum_{phi_g} f(phi_g, Phi_r)      (generated features inside the real manifold)
//! recall    = (1/|Phi_r|) sum_{phi_r} f(phi_r, Phi_g)      (real features inside the generated manifold)
//! ```
//!
//! Both sets must have the same size (the radii depend on the sample density, so unequal sizes make
//! the two numbers incomparable). Squared distances come from `|a|^2 - 2 a.b + |b|^2` (clamped at 0)
//! with matrix products in `f64`, one block of rows at a time: a block holds at most `2^22` distances
//! (32 MiB), and the computation needs about four such blocks at once, so its memory beyond the inputs
//! stays below about 128 MiB whatever the number of samples. Time is `O(n^2 d)`.

use serde::Serialize;
use tch::{Kind, Tensor};

use super::feature_matrix;
use crate::{Error, Result};

const METRIC: &str = "precision/recall";

/// The number of neighbours of SPEC section 6 and of Kynkaanniemi et al.'s experiments.
pub const DEFAULT_K: usize = 3;

/// Distances (`f64`) per block of rows: bounds the memory of one block.
const DISTANCE_BLOCK: usize = 1 << 22;

/// Precision and recall with `k`-nearest-neighbour manifolds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PrecisionRecall {
    /// Share of generated samples inside the real manifold.
    pub precision: f64,
    /// Share of real samples inside the generated manifold.
    pub recall: f64,
    /// Neighbour count of the manifold radii.
    pub k: usize,
    /// Samples in each set.
    pub n: usize,
    /// Feature dimension `d`.
    pub dim: usize,
}

/// Precision and recall of `generated` against `real` features, both `[n, d]` (any float kinds and
/// devices; `f64` on the device of `real`), with `k = 3` (module docs; Kynkaanniemi et al. 2019).
///
/// Errors when the sets are not 2-D, differ in size or dimension, have fewer than `k + 1 = 4`
/// samples, or hold NaN or infinite values.
///
/// ```
/// use genflow::metrics::precision_recall;
/// use tch::{Kind, Tensor};
///
/// tch::manual_seed(0);
/// let real = Tensor::randn([300, 4], (Kind::Float, tch::Device::Cpu));
/// // identical sets: every sample lies in its own ball
/// let same = precision_recall(&real, &real)?;
/// assert_eq!((same.precision, same.recall), (1.0, 1.0));
/// // a far-away set shares no part of the manifold with the real one
/// let far = precision_recall(&real, &(&real + 100.0))?;
/// assert_eq!((far.precision, far.recall), (0.0, 0.0));
/// // collapsed samples at the real mean are all realistic but cover only the centre
/// let collapsed = Tensor::zeros([300, 4], (Kind::Float, tch::Device::Cpu)) + 0.01 * &real;
/// let pr = precision_recall(&real, &collapsed)?;
/// assert!(pr.precision > 0.9 && pr.recall < 0.2);
/// # Ok::<(), genflow::Error>(())
/// ```
pub fn precision_recall(real: &Tensor, generated: &Tensor) -> Result<PrecisionRecall> {
    precision_recall_k(real, generated, DEFAULT_K)
}

/// [`precision_recall`] with `k` nearest neighbours instead of 3.
///
/// Errors as [`precision_recall`], and when `k` is 0 (the sets then need `k + 1` samples).
pub fn precision_recall_k(real: &Tensor, generated: &Tensor, k: usize) -> Result<PrecisionRecall> {
    if k == 0 {
        return Err(Error::config(format!(
            "{METRIC}: k = 0 neighbours; the manifold radii need k >= 1 (the default is 3)"
        )));
    }
    let (rs, gs) = (real.size(), generated.size());
    if rs.len() == 2 && gs.len() == 2 {
        if rs[0] != gs[0] {
            return Err(Error::shape(format!(
                "{METRIC}: the sets differ in size ({} real, {} generated); pass the same number of \
                 samples on both sides",
                rs[0], gs[0]
            )));
        }
        if rs[1] != gs[1] {
            return Err(Error::shape(format!(
                "{METRIC}: feature dimensions differ ({} real, {} generated); both sets must come \
                 from the same feature layer",
                rs[1], gs[1]
            )));
        }
    }
    let r = feature_matrix(real, METRIC, "real", k + 1)?;
    let g = feature_matrix(generated, METRIC, "generated", k + 1)?.f_to_device(r.device())?;
    let r_radii = knn_sq_radii(&r, k)?;
    let g_radii = knn_sq_radii(&g, k)?;
    let n = r.size()[0] as usize;
    Ok(PrecisionRecall {
        precision: inside_count(&g, &r, &r_radii)? as f64 / n as f64,
        recall: inside_count(&r, &g, &g_radii)? as f64 / n as f64,
        k,
        n,
        dim: r.size()[1] as usize,
    })
}

/// The manifold radii `|phi - NN_k(phi, Phi)|` of each feature of `features` `[n, d]` (any float kind
/// and device, `n >= k + 1`), as `f64` `[n]` on its device: the distance to its `k`-th nearest other
/// feature (an exact duplicate counts as a neighbour at distance 0).
///
/// Errors when `features` is not 2-D, has fewer than `k + 1` samples or holds NaN or infinite values,
/// or when `k` is 0.
///
/// ```
/// use genflow::metrics::precision_recall::knn_radii;
/// use tch::Tensor;
///
/// let x = Tensor::from_slice(&[0.0f64, 1.0, 3.0, 7.0]).reshape([4, 1]);
/// // distances to the others: 0: {1, 3, 7}; 1: {1, 2, 6}; 3: {3, 2, 4}; 7: {7, 6, 4}
/// let r = Vec::<f64>::try_from(knn_radii(&x, 2)?)?; // the second smallest of each
/// assert_eq!(r, vec![3.0, 2.0, 3.0, 6.0]);
/// # Ok::<(), genflow::Error>(())
/// ```
pub fn knn_radii(features: &Tensor, k: usize) -> Result<Tensor> {
    if k == 0 {
        return Err(Error::config(format!(
            "{METRIC}: k = 0 neighbours; the manifold radii need k >= 1 (the default is 3)"
        )));
    }
    let x = feature_matrix(features, METRIC, "features", k + 1)?;
    Ok(knn_sq_radii(&x, k)?.f_sqrt()?)
}

/// Rows per block so that a block of distances to `n` points holds at most [`DISTANCE_BLOCK`].
fn block_rows(n: usize) -> usize {
    (DISTANCE_BLOCK / n.max(1)).max(1)
}

/// Squared distances `[c, n]` between the rows of `a` `[c, d]` and of `b` `[n, d]`, given the squared
/// norms `b_sq` `[n]` of `b`: `|a|^2 - 2 a.b + |b|^2`, clamped at 0.
fn sq_distances(a: &Tensor, b: &Tensor, b_sq: &Tensor) -> Result<Tensor> {
    let a_sq = a
        .f_square()?
        .f_sum_dim_intlist([1i64].as_slice(), true, Kind::Double)?;
    let ab = a.f_matmul(&b.f_tr()?)?;
    Ok((a_sq - ab * 2.0 + b_sq.f_unsqueeze(0)?).f_clamp_min(0.0)?)
}

/// Squared norms `[n]` of the rows of `x`.
fn sq_norms(x: &Tensor) -> Result<Tensor> {
    Ok(x.f_square()?
        .f_sum_dim_intlist([1i64].as_slice(), false, Kind::Double)?)
}

/// Squared `k`-th-neighbour radii `[n]` of the rows of the finite `f64` matrix `x` `[n, d]`.
fn knn_sq_radii(x: &Tensor, k: usize) -> Result<Tensor> {
    let n = x.size()[0] as usize;
    let x_sq = sq_norms(x)?;
    let rows = block_rows(n);
    let mut parts = Vec::new();
    let mut start = 0;
    while start < n {
        let c = rows.min(n - start);
        let block = x.f_narrow(0, start as i64, c as i64)?;
        let dist = sq_distances(&block, x, &x_sq)?;
        // each row's own entry is exactly 0, whatever rounding made of it
        let _ = dist.f_diagonal(start as i64, 0, 1)?.f_fill_(0.0)?;
        // the (k+1)-th smallest of a row that includes itself is the k-th nearest other point
        let (kth, _) = dist.f_kthvalue(k as i64 + 1, 1, false)?;
        parts.push(kth);
        start += c;
    }
    Ok(Tensor::f_cat(&parts, 0)?)
}

/// How many rows of `query` lie in at least one ball around the rows of `centres` with squared radii
/// `sq_radii` (`|q - c|^2 <= r_c^2`).
fn inside_count(query: &Tensor, centres: &Tensor, sq_radii: &Tensor) -> Result<i64> {
    let n = query.size()[0] as usize;
    let c_sq = sq_norms(centres)?;
    let radii = sq_radii.f_unsqueeze(0)?;
    let rows = block_rows(centres.size()[0] as usize);
    let mut count = 0;
    let mut start = 0;
    while start < n {
        let c = rows.min(n - start);
        let block = query.f_narrow(0, start as i64, c as i64)?;
        let dist = sq_distances(&block, centres, &c_sq)?;
        count += dist
            .f_le_tensor(&radii)?
            .f_any_dim(1, false)?
            .f_sum(Kind::Int64)?
            .f_int64_value(&[])?;
        start += c;
    }
    Ok(count)
}
