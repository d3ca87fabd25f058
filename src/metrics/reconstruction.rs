//! Reconstruction quality of models that encode (SPEC section 6, beside FD and KID; the
//! reconstruction errors reported by GLO, Bojanowski et al. 2018, and O-GAN, Su 2019):
//!
//! ```text
//! mse_i = (1/D) sum_j (x_ij - x_hat_ij)^2           (per item, D = elements per item)
//! mse   = (1/n) sum_i mse_i
//! agreement = #{i : a_i = b_i} / n                    (e.g. classifier labels of x and of x_hat)
//! ```

use serde::Serialize;
use tch::{Kind, Tensor};

use super::finite_f64;
use crate::{Error, Result};

const MSE: &str = "reconstruction MSE";
const AGREEMENT: &str = "label agreement";

/// Per-item and mean reconstruction MSE.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReconstructionMse {
    /// `mse_i`, the mean squared error over the elements of each item, in item order.
    pub per_item: Vec<f64>,
    /// The mean of `per_item`.
    pub mean: f64,
    /// Number of items.
    pub n: usize,
}

/// The mean squared error between items `x` and their reconstructions `x_hat`, both `[n, ...]` of the
/// same shape (any float kinds and devices; `f64`): per item averaged over its `D` elements, and the
/// mean over items (module docs).
///
/// Errors when the shapes differ, `x` has no items or no elements per item, or a value is NaN or
/// infinite.
///
/// ```
/// use genflow::metrics::reconstruction_mse;
/// use tch::Tensor;
///
/// let x = Tensor::from_slice(&[0.0f32, 0.0, 1.0, 1.0]).reshape([2, 2]);
/// let x_hat = Tensor::from_slice(&[0.0f32, 2.0, 1.0, 1.5]).reshape([2, 2]);
/// let mse = reconstruction_mse(&x, &x_hat)?;
/// assert_eq!(mse.per_item, vec![2.0, 0.125]); // (0 + 4) / 2 and (0 + 0.25) / 2
/// assert_eq!(mse.mean, 1.0625);
/// # Ok::<(), genflow::Error>(())
/// ```
pub fn reconstruction_mse(x: &Tensor, x_hat: &Tensor) -> Result<ReconstructionMse> {
    let (sx, sh) = (x.size(), x_hat.size());
    if sx != sh {
        return Err(Error::shape(format!(
            "{MSE}: x has shape {sx:?} but x_hat has {sh:?}; reconstructions must have the shape \
             of their inputs"
        )));
    }
    if sx.is_empty() || sx[0] < 1 || sx.iter().skip(1).product::<i64>() < 1 {
        return Err(Error::shape(format!(
            "{MSE}: x has shape {sx:?}; give at least one item [n, ...] with at least one element"
        )));
    }
    let a = finite_f64(x, MSE, "x")?;
    let b = finite_f64(x_hat, MSE, "x_hat")?.f_to_device(a.device())?;
    let per_item = a
        .f_sub(&b)?
        .f_square()?
        .f_reshape([sx[0], -1])?
        .f_mean_dim(1, false, Kind::Double)?;
    let mean = per_item.f_mean(Kind::Double)?.f_double_value(&[])?;
    Ok(ReconstructionMse {
        per_item: Vec::<f64>::try_from(&per_item)?,
        mean,
        n: sx[0] as usize,
    })
}

/// The share of positions where two label vectors `[n]` (integer class indices of any integer kind,
/// on any devices) agree: `#{i : a_i = b_i} / n` (module docs).
///
/// Errors when the labels are not 1-D integer tensors of the same length `n >= 1`.
///
/// ```
/// use genflow::metrics::label_agreement;
/// use tch::Tensor;
///
/// let a = Tensor::from_slice(&[1i64, 7, 3, 3]);
/// let b = Tensor::from_slice(&[1i64, 2, 3, 3]);
/// assert_eq!(label_agreement(&a, &b)?, 0.75);
/// # Ok::<(), genflow::Error>(())
/// ```
pub fn label_agreement(labels_a: &Tensor, labels_b: &Tensor) -> Result<f64> {
    for (name, t) in [("labels_a", labels_a), ("labels_b", labels_b)] {
        if t.dim() != 1 {
            return Err(Error::shape(format!(
                "{AGREEMENT}: {name} must be a 1-D tensor of class indices [n], got shape {:?}",
                t.size()
            )));
        }
        if t.f_is_floating_point()? || t.kind() == Kind::Bool || t.f_is_complex()? {
            return Err(Error::shape(format!(
                "{AGREEMENT}: {name} must hold integer class indices, got {:?}; take argmax(-1) of \
                 logits first",
                t.kind()
            )));
        }
    }
    let (na, nb) = (labels_a.size()[0], labels_b.size()[0]);
    if na != nb {
        return Err(Error::shape(format!(
            "{AGREEMENT}: {na} labels against {nb}; give one label per item on both sides"
        )));
    }
    if na < 1 {
        return Err(Error::shape(format!(
            "{AGREEMENT}: no labels; give at least one item"
        )));
    }
    let a = labels_a.f_to_kind(Kind::Int64)?;
    let b = labels_b.f_to_kind(Kind::Int64)?.f_to_device(a.device())?;
    let agree = a.f_eq_tensor(&b)?.f_sum(Kind::Int64)?.f_int64_value(&[])?;
    Ok(agree as f64 / na as f64)
}
