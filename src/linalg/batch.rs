//! Batched square matrices on `tch` tensors (`[.., n, n]`, differentiable), and the small algebra
//! that the matrix functions ([`crate::linalg::expm`], [`crate::linalg::logm`]) are written against,
//! so that one implementation serves both the plain [`Matrix`] and tensors.
//!
//! The algorithms choose their parameters (Pade degree, number of squarings or square roots) per
//! matrix from 1-norms, which are read out of the graph; everything else is ordinary differentiable
//! tensor arithmetic, so autodiff runs through the squarings and solves themselves.
//!
//! ```
//! use genflow::linalg::batch::{log_abs_det, trace};
//! use tch::{Kind, Tensor};
//! let a = Tensor::from_slice(&[2.0f64, 1.0, 1.0, 3.0]).reshape([1, 2, 2]);
//! assert!((log_abs_det(&a)?.double_value(&[0]) - 5f64.ln()).abs() < 1e-14);
//! assert_eq!(trace(&a)?.double_value(&[0]), 5.0);
//! # Ok::<(), genflow::Error>(())
//! ```

use crate::linalg::dense::Matrix;
use crate::{Error, Result};
use tch::{Kind, Tensor};

/// A batch of square matrices, as the matrix functions see it. Each method acts on every matrix
/// of the batch; per-matrix quantities are slices with one entry per matrix.
pub(crate) trait SquareBatch: Sized {
    /// Unit roundoff `u` of the element type (`2^-53` for `f64`, `2^-24` for `f32`).
    fn unit_roundoff(&self) -> f64;
    /// `A B`.
    fn matmul(&self, other: &Self) -> Result<Self>;
    /// `A + B`.
    fn add(&self, other: &Self) -> Result<Self>;
    /// `A - B`.
    fn sub(&self, other: &Self) -> Result<Self>;
    /// `c A`.
    fn scale(&self, c: f64) -> Result<Self>;
    /// `A + c I`.
    fn add_identity(&self, c: f64) -> Result<Self>;
    /// `c_b A_b` for each matrix `b`.
    fn scale_each(&self, c: &[f64]) -> Result<Self>;
    /// `A_b` where `mask[b]`, else `other_b`.
    fn select(&self, mask: &[bool], other: &Self) -> Result<Self>;
    /// `A^{-1} B`.
    fn solve(&self, rhs: &Self) -> Result<Self>;
    /// `A^{-1}`.
    fn inverse(&self) -> Result<Self>;
    /// The 1-norm of each matrix.
    fn norms1(&self) -> Result<Vec<f64>>;
}

impl SquareBatch for Matrix {
    fn unit_roundoff(&self) -> f64 {
        f64::EPSILON / 2.0
    }
    fn matmul(&self, other: &Self) -> Result<Self> {
        Matrix::matmul(self, other)
    }
    fn add(&self, other: &Self) -> Result<Self> {
        Matrix::add(self, other)
    }
    fn sub(&self, other: &Self) -> Result<Self> {
        Matrix::sub(self, other)
    }
    fn scale(&self, c: f64) -> Result<Self> {
        Ok(Matrix::scale(self, c))
    }
    fn add_identity(&self, c: f64) -> Result<Self> {
        Matrix::add_identity(self, c)
    }
    fn scale_each(&self, c: &[f64]) -> Result<Self> {
        Ok(Matrix::scale(self, c.first().copied().unwrap_or(1.0)))
    }
    fn select(&self, mask: &[bool], other: &Self) -> Result<Self> {
        Ok(if mask.first().copied().unwrap_or(true) {
            self.clone()
        } else {
            other.clone()
        })
    }
    fn solve(&self, rhs: &Self) -> Result<Self> {
        Matrix::solve(self, rhs)
    }
    fn inverse(&self) -> Result<Self> {
        Matrix::inverse(self)
    }
    fn norms1(&self) -> Result<Vec<f64>> {
        Ok(vec![self.norm1()])
    }
}

/// A `[batch, n, n]` tensor of `Float` or `Double` matrices.
#[derive(Debug)]
pub(crate) struct Stack(Tensor);

impl Clone for Stack {
    /// Shares the storage (and the autograd graph), like `Tensor::shallow_clone`.
    fn clone(&self) -> Self {
        Stack(self.0.shallow_clone())
    }
}

impl Stack {
    /// `values` (one per matrix) as a `[batch, 1, 1]` tensor of the stack's kind and device.
    fn per_matrix(&self, values: &[f64]) -> Result<Tensor> {
        Ok(Tensor::from_slice(values)
            .f_to_kind(self.0.kind())?
            .f_to_device(self.0.device())?
            .f_view([-1, 1, 1])?)
    }
}

impl SquareBatch for Stack {
    fn unit_roundoff(&self) -> f64 {
        match self.0.kind() {
            Kind::Float => f64::from(f32::EPSILON) / 2.0,
            _ => f64::EPSILON / 2.0,
        }
    }
    fn matmul(&self, other: &Self) -> Result<Self> {
        Ok(Stack(self.0.f_matmul(&other.0)?))
    }
    fn add(&self, other: &Self) -> Result<Self> {
        Ok(Stack(self.0.f_add(&other.0)?))
    }
    fn sub(&self, other: &Self) -> Result<Self> {
        Ok(Stack(self.0.f_sub(&other.0)?))
    }
    fn scale(&self, c: f64) -> Result<Self> {
        Ok(Stack(self.0.f_mul_scalar(c)?))
    }
    fn add_identity(&self, c: f64) -> Result<Self> {
        let n = self.0.size()[1];
        let eye = Tensor::f_eye(n, (self.0.kind(), self.0.device()))?;
        Ok(Stack(self.0.f_add(&eye.f_mul_scalar(c)?)?))
    }
    fn scale_each(&self, c: &[f64]) -> Result<Self> {
        Ok(Stack(self.0.f_mul(&self.per_matrix(c)?)?))
    }
    fn select(&self, mask: &[bool], other: &Self) -> Result<Self> {
        let m: Vec<f64> = mask.iter().map(|&b| f64::from(u8::from(b))).collect();
        let cond = self.per_matrix(&m)?.f_gt(0.5)?;
        Ok(Stack(self.0.f_where_self(&cond, &other.0)?))
    }
    fn solve(&self, rhs: &Self) -> Result<Self> {
        Ok(Stack(Tensor::f_linalg_solve(&self.0, &rhs.0, true)?))
    }
    fn inverse(&self) -> Result<Self> {
        Ok(Stack(Tensor::f_linalg_inv(&self.0)?))
    }
    fn norms1(&self) -> Result<Vec<f64>> {
        let sums = self
            .0
            .f_abs()?
            .f_sum_dim_intlist(-2, false, self.0.kind())?;
        let norms = sums.f_amax(-1, false)?.f_to_kind(Kind::Double)?;
        Ok(Vec::<f64>::try_from(&norms)?)
    }
}

/// The shape of `a` after checking that it is a `[.., n, n]` `Float` or `Double` tensor.
pub fn square_shape(a: &Tensor, what: &str) -> Result<Vec<i64>> {
    let shape = a.size();
    let d = shape.len();
    if d < 2 || shape[d - 1] != shape[d - 2] {
        return Err(Error::shape(format!(
            "{what} needs square matrices [.., n, n], got shape {shape:?}"
        )));
    }
    if !matches!(a.kind(), Kind::Float | Kind::Double) {
        return Err(Error::shape(format!(
            "{what} needs Float or Double tensors, got {:?}; convert with .to_kind(Kind::Float)",
            a.kind()
        )));
    }
    Ok(shape)
}

/// Applies a matrix function `f`, written for stacks `[batch, n, n]`, to every matrix of a
/// `[.., n, n]` tensor (an empty batch is returned as is).
pub(crate) fn map_matrices(
    a: &Tensor,
    what: &str,
    f: impl FnOnce(&Stack) -> Result<Stack>,
) -> Result<Tensor> {
    let shape = square_shape(a, what)?;
    if a.numel() == 0 {
        return Ok(a.copy());
    }
    let n = shape[shape.len() - 1];
    Ok(f(&Stack(a.f_reshape([-1, n, n])?))?
        .0
        .f_reshape(shape.as_slice())?)
}

/// The trace `tr A = sum_i a_ii` of each matrix of `[.., n, n]`, shape `[..]` (differentiable).
pub fn trace(a: &Tensor) -> Result<Tensor> {
    square_shape(a, "the trace")?;
    Ok(a.f_diagonal(0, -2, -1)?
        .f_sum_dim_intlist(-1, false, a.kind())?)
}

/// `ln |det A|` of each matrix of `[.., n, n]` by an LU factorisation (libtorch's `slogdet`),
/// shape `[..]` (differentiable).
pub fn log_abs_det(a: &Tensor) -> Result<Tensor> {
    square_shape(a, "the log-determinant")?;
    let (_sign, logabsdet) = Tensor::f_linalg_slogdet(a)?;
    Ok(logabsdet)
}

/// The largest 1-norm in a batch, or an error if any matrix has a non-finite entry.
pub(crate) fn finite_max_norm(norms: &[f64], what: &str) -> Result<f64> {
    if norms.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite(format!(
            "{what} of a matrix with NaN or infinite entries"
        )));
    }
    Ok(norms.iter().copied().fold(0.0, f64::max))
}
