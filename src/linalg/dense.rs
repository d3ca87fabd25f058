//! A small dense `f64` matrix type for tools and reference computations (no autodiff, pure Rust).
//!
//! [`Matrix`] stores its entries row-major. It offers what the matrix functions of SPEC section 2
//! need: products, linear combinations, the 1-norm, an LU factorisation with partial pivoting
//! (Golub & Van Loan, *Matrix Computations*, 4th ed., Algorithm 3.4.1) for solves, inverses and
//! `ln |det|`, and the trace. The differentiable counterparts on `tch` tensors live in
//! [`crate::linalg::batch`].
//!
//! ```
//! use genflow::linalg::dense::Matrix;
//! let a = Matrix::from_rows(&[vec![4.0, 3.0], vec![6.0, 3.0]])?;
//! assert!((a.log_abs_det()? - 6f64.ln()).abs() < 1e-14); // det = 12 - 18 = -6
//! assert_eq!(a.trace()?, 7.0);
//! # Ok::<(), genflow::Error>(())
//! ```

use crate::{Error, Result};
use rand::Rng;
use rand_distr::{Distribution as _, StandardNormal};
use tch::{Kind, Tensor};

/// A dense row-major `f64` matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f64>,
}

/// An LU factorisation `P A = L U` with partial pivoting: `L` (unit lower) and `U` share one array.
#[derive(Debug, Clone)]
pub struct Lu {
    lu: Matrix,
    /// Row `i` of `P A` is row `perm[i]` of `A`.
    perm: Vec<usize>,
    /// `det P = +-1`.
    sign: f64,
}

impl Matrix {
    /// The `rows x cols` zero matrix.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Matrix {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    /// The `n x n` identity.
    pub fn identity(n: usize) -> Self {
        Self::from_diag(&vec![1.0; n])
    }

    /// The diagonal matrix with diagonal `d`.
    pub fn from_diag(d: &[f64]) -> Self {
        let mut m = Self::zeros(d.len(), d.len());
        for (i, &v) in d.iter().enumerate() {
            m.data[i * d.len() + i] = v;
        }
        m
    }

    /// A matrix from row-major data; `data.len()` must be `rows * cols`.
    pub fn from_vec(rows: usize, cols: usize, data: Vec<f64>) -> Result<Self> {
        if data.len() != rows * cols {
            return Err(Error::shape(format!(
                "a {rows}x{cols} matrix needs {} entries, got {}",
                rows * cols,
                data.len()
            )));
        }
        Ok(Matrix { rows, cols, data })
    }

    /// A matrix from its rows, which must all have the same length.
    pub fn from_rows(rows: &[Vec<f64>]) -> Result<Self> {
        let cols = rows.first().map_or(0, Vec::len);
        if rows.iter().any(|r| r.len() != cols) {
            return Err(Error::shape(
                "matrix rows have different lengths; give rows of equal length",
            ));
        }
        Self::from_vec(rows.len(), cols, rows.concat())
    }

    /// The outer product `x y^T`.
    pub fn outer(x: &[f64], y: &[f64]) -> Self {
        let data = x
            .iter()
            .flat_map(|&a| y.iter().map(move |&b| a * b))
            .collect();
        Matrix {
            rows: x.len(),
            cols: y.len(),
            data,
        }
    }

    /// A matrix with independent `N(0, std^2)` entries.
    pub fn random_normal(rows: usize, cols: usize, std: f64, rng: &mut impl Rng) -> Self {
        let data = (0..rows * cols)
            .map(|_| {
                let z: f64 = StandardNormal.sample(rng);
                std * z
            })
            .collect();
        Matrix { rows, cols, data }
    }

    /// A `Double` tensor `[rows, cols]` with the same entries.
    pub fn to_tensor(&self) -> Result<Tensor> {
        Ok(Tensor::from_slice(&self.data).f_reshape([self.rows as i64, self.cols as i64])?)
    }

    /// The matrix held by a 2-D tensor of any floating kind (converted to `f64`).
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let size = t.size();
        if size.len() != 2 {
            return Err(Error::shape(format!(
                "expected a 2-D tensor, got shape {size:?}"
            )));
        }
        let flat = t.f_to_kind(Kind::Double)?.f_contiguous()?.f_view([-1])?;
        let data = Vec::<f64>::try_from(&flat)?;
        Self::from_vec(size[0] as usize, size[1] as usize, data)
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The entries, row-major.
    pub fn data(&self) -> &[f64] {
        &self.data
    }

    /// Entry `(i, j)`, or `None` out of range.
    pub fn get(&self, i: usize, j: usize) -> Option<f64> {
        (i < self.rows && j < self.cols).then(|| self.data[i * self.cols + j])
    }

    /// The diagonal.
    pub fn diag(&self) -> Vec<f64> {
        (0..self.rows.min(self.cols))
            .map(|i| self.data[i * self.cols + i])
            .collect()
    }

    /// `A^T`.
    pub fn transpose(&self) -> Self {
        let mut t = Self::zeros(self.cols, self.rows);
        for i in 0..self.rows {
            for j in 0..self.cols {
                t.data[j * self.rows + i] = self.data[i * self.cols + j];
            }
        }
        t
    }

    /// `c A`.
    pub fn scale(&self, c: f64) -> Self {
        self.map(|v| c * v)
    }

    fn map(&self, f: impl Fn(f64) -> f64) -> Self {
        Matrix {
            rows: self.rows,
            cols: self.cols,
            data: self.data.iter().map(|&v| f(v)).collect(),
        }
    }

    fn zip(&self, other: &Self, what: &str, f: impl Fn(f64, f64) -> f64) -> Result<Self> {
        if (self.rows, self.cols) != (other.rows, other.cols) {
            return Err(Error::shape(format!(
                "cannot {what} a {}x{} and a {}x{} matrix",
                self.rows, self.cols, other.rows, other.cols
            )));
        }
        let data = self
            .data
            .iter()
            .zip(&other.data)
            .map(|(&a, &b)| f(a, b))
            .collect();
        Ok(Matrix {
            rows: self.rows,
            cols: self.cols,
            data,
        })
    }

    /// `A + B`.
    pub fn add(&self, other: &Self) -> Result<Self> {
        self.zip(other, "add", |a, b| a + b)
    }

    /// `A - B`.
    pub fn sub(&self, other: &Self) -> Result<Self> {
        self.zip(other, "subtract", |a, b| a - b)
    }

    /// `A + c I` (square matrices).
    pub fn add_identity(&self, c: f64) -> Result<Self> {
        self.require_square("add a multiple of the identity")?;
        let mut m = self.clone();
        for i in 0..self.rows {
            m.data[i * self.cols + i] += c;
        }
        Ok(m)
    }

    /// The product `A B`.
    pub fn matmul(&self, other: &Self) -> Result<Self> {
        if self.cols != other.rows {
            return Err(Error::shape(format!(
                "cannot multiply a {}x{} by a {}x{} matrix",
                self.rows, self.cols, other.rows, other.cols
            )));
        }
        let mut out = Self::zeros(self.rows, other.cols);
        for i in 0..self.rows {
            let row = &mut out.data[i * other.cols..(i + 1) * other.cols];
            for k in 0..self.cols {
                let a = self.data[i * self.cols + k];
                let b_row = &other.data[k * other.cols..(k + 1) * other.cols];
                row.iter_mut().zip(b_row).for_each(|(r, &b)| *r += a * b);
            }
        }
        Ok(out)
    }

    /// `A v`.
    pub fn matvec(&self, v: &[f64]) -> Result<Vec<f64>> {
        Ok(self.matmul(&Self::from_vec(v.len(), 1, v.to_vec())?)?.data)
    }

    /// The 1-norm `max_j sum_i |a_ij|` (largest absolute column sum).
    pub fn norm1(&self) -> f64 {
        (0..self.cols)
            .map(|j| {
                (0..self.rows)
                    .map(|i| self.data[i * self.cols + j].abs())
                    .sum::<f64>()
            })
            .fold(0.0, f64::max)
    }

    /// The largest absolute entry `max |a_ij|`.
    pub fn max_abs(&self) -> f64 {
        self.data.iter().fold(0.0, |m, v| m.max(v.abs()))
    }

    /// `max |a_ij - b_ij|`.
    pub fn max_abs_diff(&self, other: &Self) -> Result<f64> {
        Ok(self.sub(other)?.max_abs())
    }

    /// Whether every entry is finite.
    pub fn is_finite(&self) -> bool {
        self.data.iter().all(|v| v.is_finite())
    }

    /// The order `n` of a square matrix, or an error naming `what` needed it.
    pub(crate) fn require_square(&self, what: &str) -> Result<usize> {
        if self.rows != self.cols {
            return Err(Error::shape(format!(
                "{what} needs a square matrix, got {}x{}",
                self.rows, self.cols
            )));
        }
        Ok(self.rows)
    }

    /// The trace `sum_i a_ii` (square matrices).
    pub fn trace(&self) -> Result<f64> {
        self.require_square("the trace")?;
        Ok(self.diag().iter().sum())
    }

    /// The LU factorisation with partial pivoting (square matrices).
    pub fn lu(&self) -> Result<Lu> {
        let n = self.require_square("an LU factorisation")?;
        let mut a = self.clone();
        let mut perm: Vec<usize> = (0..n).collect();
        let mut sign = 1.0;
        for k in 0..n {
            let pivot = (k..n)
                .max_by(|&i, &j| a.data[i * n + k].abs().total_cmp(&a.data[j * n + k].abs()))
                .unwrap_or(k);
            if pivot != k {
                for j in 0..n {
                    a.data.swap(k * n + j, pivot * n + j);
                }
                perm.swap(k, pivot);
                sign = -sign;
            }
            let p = a.data[k * n + k];
            if p == 0.0 {
                continue; // singular: U has a zero pivot, the column below is already zero
            }
            for i in k + 1..n {
                let l = a.data[i * n + k] / p;
                a.data[i * n + k] = l;
                for j in k + 1..n {
                    a.data[i * n + j] -= l * a.data[k * n + j];
                }
            }
        }
        Ok(Lu { lu: a, perm, sign })
    }

    /// `ln |det A|` from the LU factorisation (`-inf` for a singular matrix).
    pub fn log_abs_det(&self) -> Result<f64> {
        Ok(self.lu()?.log_abs_det())
    }

    /// `A^{-1} B`.
    pub fn solve(&self, rhs: &Self) -> Result<Self> {
        self.lu()?.solve(rhs)
    }

    /// `A^{-1}`.
    pub fn inverse(&self) -> Result<Self> {
        self.solve(&Self::identity(self.rows))
    }
}

impl Lu {
    /// `ln |det A| = sum_i ln |u_ii|`.
    pub fn log_abs_det(&self) -> f64 {
        self.lu.diag().iter().map(|u| u.abs().ln()).sum()
    }

    /// `sign(det A)` (0 for a singular matrix).
    pub fn sign(&self) -> f64 {
        let signs: f64 = self
            .lu
            .diag()
            .iter()
            .map(|u| u.signum() * f64::from(*u != 0.0))
            .product();
        self.sign * signs
    }

    /// `A^{-1} B` by forward and back substitution.
    pub fn solve(&self, rhs: &Matrix) -> Result<Matrix> {
        let n = self.lu.rows;
        if rhs.rows != n {
            return Err(Error::shape(format!(
                "cannot solve a {n}x{n} system with a right-hand side of {} rows",
                rhs.rows
            )));
        }
        if let Some(k) = self.lu.diag().iter().position(|&u| u == 0.0) {
            return Err(Error::NonFinite(format!(
                "solve with a singular matrix (zero pivot in column {k}); the result would be infinite"
            )));
        }
        let m = rhs.cols;
        let mut x = Matrix::zeros(n, m);
        for (i, &p) in self.perm.iter().enumerate() {
            x.data[i * m..(i + 1) * m].copy_from_slice(&rhs.data[p * m..(p + 1) * m]);
        }
        let lu = &self.lu.data;
        for i in 0..n {
            for k in 0..i {
                let l = lu[i * n + k];
                for j in 0..m {
                    x.data[i * m + j] -= l * x.data[k * m + j];
                }
            }
        }
        for i in (0..n).rev() {
            for k in i + 1..n {
                let u = lu[i * n + k];
                for j in 0..m {
                    x.data[i * m + j] -= u * x.data[k * m + j];
                }
            }
            let d = lu[i * n + i];
            x.data[i * m..(i + 1) * m].iter_mut().for_each(|v| *v /= d);
        }
        Ok(x)
    }
}
