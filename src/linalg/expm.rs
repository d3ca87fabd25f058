//! The matrix exponential by scaling and squaring with a diagonal Pade approximant
//! (Higham 2005, "The scaling and squaring method for the matrix exponential revisited",
//! SIAM J. Matrix Anal. Appl. 26(4), Algorithm 2.3).
//!
//! `exp(A) = r_m(2^-s A)^(2^s)` with `r_m = q_m^{-1} p_m` the `[m/m]` Pade approximant,
//! `p_m(x) = sum_k b_k x^k`, `q_m(x) = p_m(-x)`, `b_k proportional to (2m-k)! m! / ((2m)! k! (m-k)!)`.
//! The degree and the scaling come from the 1-norm: the smallest `m` with `|A|_1 <= theta_m`
//! (no scaling), otherwise the largest degree with `s = ceil(log2(|A|_1 / theta_max))`. The
//! thresholds `theta_m` (Higham 2005, Table 2.3) bound the backward error by the unit roundoff:
//! degrees 3, 5, 7, 9, 13 in double precision and 3, 5, 7 in single precision.
//!
//! The polynomials are evaluated in `B = A^2`: `p_m(A) = V + U`, `q_m(A) = V - U` with
//! `U = A u(B)` (odd coefficients) and `V = v(B)` (even ones). With `B, B^2, B^3` formed, a
//! polynomial of degree up to 6 in `B` costs one more product:
//! `c_0 I + c_1 B + c_2 B^2 + c_3 B^3 + B^3 (c_4 B + c_5 B^2 + c_6 B^3)` (Higham's scheme for
//! `m = 13`; the same code serves every degree).
//!
//! Batches `[.., n, n]` choose the degree from their largest norm and the number of squarings per
//! matrix; the squarings are masked per matrix, so each matrix gets exactly its own scaling.
//! The tensor version is differentiable: autodiff runs through the Pade solve and the squarings.
//!
//! ```
//! use genflow::linalg::{dense::Matrix, expm::expm};
//! use tch::Tensor;
//! // exp of the rotation generator t [[0, -1], [1, 0]] is the rotation by t.
//! let t = 0.7f64;
//! let g = Matrix::from_rows(&[vec![0.0, -t], vec![t, 0.0]])?;
//! let r = g.expm()?;
//! assert!((r.get(0, 0).unwrap() - t.cos()).abs() < 1e-15);
//! assert!((r.get(1, 0).unwrap() - t.sin()).abs() < 1e-15);
//! let e = expm(&g.to_tensor()?)?; // the differentiable version agrees
//! assert!((e.double_value(&[1, 0]) - t.sin()).abs() < 1e-15);
//! # Ok::<(), genflow::Error>(())
//! ```

use crate::linalg::batch::{finite_max_norm, map_matrices, SquareBatch};
use crate::linalg::dense::Matrix;
use crate::Result;
use tch::Tensor;

/// `(m, theta_m)` for double precision (`u = 2^-53`), Higham 2005, Table 2.3.
pub const THETA_DOUBLE: [(usize, f64); 5] = [
    (3, 1.495585217958292e-2),
    (5, 2.53939833006323e-1),
    (7, 9.504178996162932e-1),
    (9, 2.097847961257068e0),
    (13, 5.371920351148152e0),
];

/// `(m, theta_m)` for single precision (`u = 2^-24`), Higham 2005, Table 2.3.
pub const THETA_SINGLE: [(usize, f64); 3] = [
    (3, 4.258730016922831e-1),
    (5, 1.880152677804762e0),
    (7, 3.92572478313866e0),
];

/// The coefficients `b_0..b_m` of the numerator `p_m` of the `[m/m]` Pade approximant of `e^x`,
/// scaled so that `b_m = 1` (then they are integers, e.g. Higham's `b_0 = 64764752532480000` for
/// `m = 13`). From `b_k / b_{k+1} = (k+1)(2m-k) / (m-k)`.
pub fn pade_coefficients(m: usize) -> Vec<f64> {
    let mut b = vec![1.0; m + 1];
    for k in (0..m).rev() {
        b[k] = b[k + 1] * ((k + 1) * (2 * m - k)) as f64 / (m - k) as f64;
    }
    b
}

/// The thresholds for the precision with unit roundoff `u`.
fn thresholds(u: f64) -> &'static [(usize, f64)] {
    if u > 1e-10 {
        &THETA_SINGLE
    } else {
        &THETA_DOUBLE
    }
}

/// `s = max(0, ceil(log2(norm / theta)))`: the number of squarings that brings `norm` below `theta`.
fn squarings(norm: f64, theta: f64) -> u32 {
    if norm <= theta {
        0
    } else {
        (norm / theta).log2().ceil() as u32
    }
}

/// `sum_j c_j P_j` over the pairs of `c` (not empty) and `powers`.
fn sum_scaled<M: SquareBatch>(c: &[f64], powers: &[M]) -> Result<M> {
    let mut acc = powers[0].scale(c[0])?;
    for (cj, p) in c[1..].iter().zip(&powers[1..]) {
        acc = acc.add(&p.scale(*cj)?)?;
    }
    Ok(acc)
}

/// `sum_j c_j B^j` for `1 <= deg(c) <= 6`, given `powers = [B, B^2, B^3]` (as many as needed).
fn poly_in_b<M: SquareBatch>(c: &[f64], powers: &[M]) -> Result<M> {
    let lower = sum_scaled(&c[1..c.len().min(4)], powers)?.add_identity(c[0])?;
    if c.len() <= 4 {
        return Ok(lower);
    }
    let upper = sum_scaled(&c[4..], powers)?;
    lower.add(&powers[2].matmul(&upper)?)
}

/// `r_m(A) = (V - U)^{-1} (V + U)`.
fn pade<M: SquareBatch>(a: &M, m: usize) -> Result<M> {
    let b = pade_coefficients(m);
    let even: Vec<f64> = b.iter().step_by(2).copied().collect();
    let odd: Vec<f64> = b.iter().skip(1).step_by(2).copied().collect();
    let degree = odd.len() - 1;
    let mut powers = vec![a.matmul(a)?];
    while powers.len() < degree.min(3) {
        let next = powers[powers.len() - 1].matmul(&powers[0])?;
        powers.push(next);
    }
    let u = a.matmul(&poly_in_b(&odd, &powers)?)?;
    let v = poly_in_b(&even, &powers)?;
    v.sub(&u)?.solve(&v.add(&u)?)
}

/// Scaling and squaring for any [`SquareBatch`].
pub(crate) fn expm_generic<M: SquareBatch>(a: &M) -> Result<M> {
    let norms = a.norms1()?;
    let max_norm = finite_max_norm(&norms, "the matrix exponential")?;
    let table = thresholds(a.unit_roundoff());
    if let Some(&(m, _)) = table.iter().find(|(_, theta)| max_norm <= *theta) {
        return pade(a, m);
    }
    let (m, theta) = table[table.len() - 1];
    let s: Vec<u32> = norms.iter().map(|&n| squarings(n, theta)).collect();
    let factors: Vec<f64> = s.iter().map(|&k| 0.5f64.powi(k as i32)).collect();
    let mut r = pade(&a.scale_each(&factors)?, m)?;
    let most = s.iter().copied().max().unwrap_or(0);
    for step in 0..most {
        let mask: Vec<bool> = s.iter().map(|&k| step < k).collect();
        let squared = r.matmul(&r)?;
        r = if mask.iter().all(|&b| b) {
            squared
        } else {
            squared.select(&mask, &r)?
        };
    }
    Ok(r)
}

/// `exp(A)` for each matrix of a `[.., n, n]` `Float` or `Double` tensor (differentiable).
pub fn expm(a: &Tensor) -> Result<Tensor> {
    map_matrices(a, "the matrix exponential", expm_generic)
}

impl Matrix {
    /// `exp(A)` (square matrices), the plain `f64` version of [`expm`].
    pub fn expm(&self) -> Result<Matrix> {
        self.require_square("the matrix exponential")?;
        expm_generic(self)
    }
}
