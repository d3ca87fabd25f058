//! A numerical check of the matrix identities of SPEC section 2 on random matrices (the library
//! side of `genflow linalg check`), with the plain `f64` [`Matrix`] functions.
//!
//! Each identity is measured as an error and compared with a bound from first-order rounding-error
//! analysis: `c n u` (`u = 2^-53`, `n` the size) times the norms the error grows with (the
//! condition `kappa(M) = |M|_1 |M^{-1}|_1`, `|A|_1`, ...); the conditions come from libtorch's
//! matrix exponential and inverse, independent of the functions checked. The constants `c` are those of the tests
//! (`tests/linalg_expm.rs`, `tests/linalg_logm.rs`, `tests/linalg_rank_one.rs`), several times the
//! largest errors seen there for sizes 1 to 64.
//!
//! ```
//! let report = genflow::linalg::check::identity_report(8, 0)?;
//! assert_eq!(report["all_passed"], true);
//! # Ok::<(), genflow::Error>(())
//! ```

use crate::linalg::dense::Matrix;
use crate::linalg::rank_one::{expm1_over_s, rank_one_exp_dense};
use crate::{Error, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tch::{Kind, Tensor};

/// Unit roundoff of `f64`.
const U: f64 = f64::EPSILON / 2.0;

/// One measured identity.
struct Row {
    name: &'static str,
    matrix: &'static str,
    measure: &'static str,
    error: f64,
    bound_formula: &'static str,
    bound: f64,
}

impl Row {
    fn to_json(&self) -> Value {
        json!({
            "identity": self.name,
            "matrix": self.matrix,
            "measure": self.measure,
            "error": self.error,
            "bound_formula": self.bound_formula,
            "bound": self.bound,
            "passed": self.error <= self.bound,
        })
    }
}

/// A random `n x n` matrix with `N(0, scale^2 / n)` entries (spectral radius about `scale`).
fn random(n: usize, scale: f64, rng: &mut StdRng) -> Matrix {
    Matrix::random_normal(n, n, scale / (n as f64).sqrt(), rng)
}

/// `|M|_1`, the largest absolute column sum, of a tensor.
fn norm1(m: &Tensor) -> Result<f64> {
    Ok(m.f_abs()?
        .f_sum_dim_intlist(0, false, Kind::Double)?
        .f_max()?
        .f_double_value(&[])?)
}

/// `kappa(exp A) = |exp A|_1 |exp(-A)|_1`, with libtorch's matrix exponential (`torch.linalg.
/// matrix_exp`, Bader, Blanes & Casas 2019), so that the bounds do not come from the code they
/// check.
fn exp_condition(a: &Matrix) -> Result<f64> {
    let t = a.to_tensor()?;
    Ok(norm1(&t.f_linalg_matrix_exp()?)? * norm1(&t.f_neg()?.f_linalg_matrix_exp()?)?)
}

/// `kappa(B) = |B|_1 |B^{-1}|_1` with libtorch's LU inverse.
fn condition(b: &Matrix) -> Result<f64> {
    let t = b.to_tensor()?;
    Ok(norm1(&t)? * norm1(&Tensor::f_linalg_inv(&t)?)?)
}

fn det_exp(n: usize, rng: &mut StdRng) -> Result<Row> {
    let a = random(n, 2.0, rng);
    let (e, kappa) = (a.expm()?, exp_condition(&a)?);
    Ok(Row {
        name: "det(exp A) = exp(tr A)",
        matrix: "A with N(0, 4/n) entries",
        measure: "|ln|det exp A| (LU) - tr A|",
        error: (e.log_abs_det()? - a.trace()?).abs(),
        bound_formula: "10 n u max(1, |A|_1) kappa(exp A)",
        bound: 10.0 * n as f64 * U * a.norm1().max(1.0) * kappa,
    })
}

fn exp_inverse(n: usize, rng: &mut StdRng) -> Result<Row> {
    let a = random(n, 2.0, rng);
    let (e, f) = (a.expm()?, a.scale(-1.0).expm()?);
    Ok(Row {
        name: "exp(A) exp(-A) = I",
        matrix: "A with N(0, 4/n) entries",
        measure: "max |exp(A) exp(-A) - I|",
        error: e.matmul(&f)?.max_abs_diff(&Matrix::identity(n))?,
        bound_formula: "20 n u |exp A|_1 |exp(-A)|_1",
        bound: 20.0 * n as f64 * U * exp_condition(&a)?,
    })
}

fn log_exp(n: usize, rng: &mut StdRng) -> Result<Row> {
    let a = random(n, 0.5, rng);
    let (e, kappa) = (a.expm()?, exp_condition(&a)?);
    Ok(Row {
        name: "log(exp A) = A",
        matrix: "A with N(0, 1/(4n)) entries (eigenvalues well inside |Im| < pi)",
        measure: "max |log(exp A) - A| / max(1, max |A|)",
        error: e.logm()?.max_abs_diff(&a)? / a.max_abs().max(1.0),
        bound_formula: "100 n u max(1, |A|_1) kappa(exp A)",
        bound: 100.0 * n as f64 * U * a.norm1().max(1.0) * kappa,
    })
}

fn exp_diag(n: usize, rng: &mut StdRng) -> Result<Row> {
    let d: Vec<f64> = (0..n).map(|_| rng.random_range(-5.0..5.0)).collect();
    let e = Matrix::from_diag(&d).expm()?;
    let diag = e.diag();
    let diag_err = diag
        .iter()
        .zip(&d)
        .map(|(v, di)| (v / di.exp() - 1.0).abs());
    let off_diag = e.sub(&Matrix::from_diag(&diag))?.max_abs();
    Ok(Row {
        name: "exp(diag d) = diag(exp d)",
        matrix: "d uniform on [-5, 5]",
        measure: "max relative error of the diagonal, and max |off-diagonal|",
        error: diag_err.fold(off_diag, f64::max),
        bound_formula: "100 u max(1, max |d|)",
        bound: 100.0 * U * d.iter().fold(1.0f64, |m, v| m.max(v.abs())),
    })
}

fn rotation(n: usize, rng: &mut StdRng) -> Result<Row> {
    let m = n.max(2);
    let t: f64 = rng.random_range(-3.0..3.0);
    let generator =
        Matrix::outer(&unit(m, 1), &unit(m, 0)).sub(&Matrix::outer(&unit(m, 0), &unit(m, 1)))?;
    let mut exact = Matrix::identity(m).data().to_vec();
    exact[0] = t.cos();
    exact[1] = -t.sin();
    exact[m] = t.sin();
    exact[m + 1] = t.cos();
    Ok(Row {
        name: "exp(t (e1 e0^T - e0 e1^T)) = rotation by t",
        matrix: "plane (0, 1), t uniform on [-3, 3] (size max(n, 2))",
        measure: "max |exp(G) - R(t)|",
        error: generator
            .scale(t)
            .expm()?
            .max_abs_diff(&Matrix::from_vec(m, m, exact)?)?,
        bound_formula: "20 u max(1, |t|)",
        bound: 20.0 * U * t.abs().max(1.0),
    })
}

fn unit(m: usize, i: usize) -> Vec<f64> {
    (0..m).map(|j| f64::from(u8::from(i == j))).collect()
}

fn nilpotent(n: usize, rng: &mut StdRng) -> Result<Row> {
    let r = random(n, 2.0, rng);
    let data = (0..n * n)
        .map(|k| if k % n > k / n { r.data()[k] } else { 0.0 })
        .collect();
    let a = Matrix::from_vec(n, n, data)?;
    let (mut term, mut series) = (Matrix::identity(n), Matrix::identity(n));
    for k in 1..n {
        term = term.matmul(&a)?.scale(1.0 / k as f64);
        series = series.add(&term)?;
    }
    Ok(Row {
        name: "exp(N) = sum_{k<n} N^k / k! for nilpotent N",
        matrix: "strictly upper triangular N with N(0, 4/n) entries",
        measure: "max |exp(N) - series| / max(1, max |series|)",
        error: a.expm()?.max_abs_diff(&series)? / series.max_abs().max(1.0),
        bound_formula: "50 n u",
        bound: 50.0 * n as f64 * U,
    })
}

fn logdet_trace_log(n: usize, rng: &mut StdRng) -> Result<Row> {
    let g = random(n, 1.0, rng);
    let b = g
        .scale(0.5 / g.norm1().max(f64::MIN_POSITIVE))
        .add_identity(1.0)?;
    let log_b = b.logm()?;
    let kappa = condition(&b)?;
    Ok(Row {
        name: "ln det B = tr ln B",
        matrix: "B = I + G, G random scaled to |G|_1 = 1/2 (eigenvalues within 1/2 of 1)",
        measure: "|tr log B - ln|det B| (LU)|",
        error: (log_b.trace()? - b.log_abs_det()?).abs(),
        bound_formula: "300 n u max(1, |log B|_1) max(1, ln kappa(B))",
        bound: 300.0 * n as f64 * U * log_b.norm1().max(1.0) * kappa.ln().max(1.0),
    })
}

fn rank_one(n: usize, rng: &mut StdRng) -> Result<Vec<Row>> {
    let std = (n as f64).powf(-0.25) * 1.5;
    let draw = |rng: &mut StdRng| Matrix::random_normal(n, 1, std, rng).data().to_vec();
    let (x, y) = (draw(rng), draw(rng));
    let neg_x: Vec<f64> = x.iter().map(|v| -v).collect();
    let s: f64 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
    let outer = Matrix::outer(&x, &y);
    let (e, inv) = (rank_one_exp_dense(&x, &y)?, rank_one_exp_dense(&neg_x, &y)?);
    let general = outer.expm()?;
    // Sizes of the summands of I + phi(s) x y^T and of I + phi(-s) (-x) y^T.
    let size = |phi: f64| (phi.abs() * outer.norm1()).max(1.0);
    let (n_e, n_inv) = (size(expm1_over_s(s)), size(expm1_over_s(-s)));
    let nu = n as f64 * U;
    let matrix = "x, y with N(0, 2.25/sqrt(n)) entries (s = y^T x of order 2)";
    Ok(vec![
        Row {
            name: "exp(x y^T) = I + (expm1(s)/s) x y^T",
            matrix,
            measure: "max |closed form - expm(x y^T)|",
            error: e.max_abs_diff(&general)?,
            bound_formula: "20 n u max(1, |x y^T|_1) max(N, max |E|), N = max(1, |phi(s) x y^T|_1)",
            bound: 20.0 * nu * outer.norm1().max(1.0) * n_e.max(general.max_abs()),
        },
        Row {
            name: "exp(x y^T) exp(-x y^T) = I",
            matrix,
            measure: "max |product - I|",
            error: e.matmul(&inv)?.max_abs_diff(&Matrix::identity(n))?,
            bound_formula: "10 n u (N |E^-1|_1 + N_inv |E|_1)",
            bound: 10.0 * nu * (n_e * inv.norm1() + n_inv * e.norm1()),
        },
        Row {
            name: "det exp(x y^T) = e^s",
            matrix,
            measure: "|ln|det E| (LU) - s|",
            error: (e.log_abs_det()? - s).abs(),
            bound_formula: "10 n u N |E^-1|_1",
            bound: 10.0 * nu * n_e * inv.norm1(),
        },
    ])
}

/// The errors of the identities of SPEC section 2 on random `n x n` matrices drawn with `seed`:
/// `det(exp A) = exp(tr A)`, `exp(A) exp(-A) = I`, `log(exp A) = A`, `exp(diag) = diag(exp)`,
/// the rotation generator, a nilpotent matrix's finite series, `ln det B = tr ln B`, and the
/// rank-one closed form (value, inverse, determinant).
///
/// Returns `{"n", "seed", "unit_roundoff", "identities": [{"identity", "matrix", "measure",
/// "error", "bound_formula", "bound", "passed"}], "all_passed"}`.
pub fn identity_report(n: usize, seed: u64) -> Result<Value> {
    if n == 0 {
        return Err(Error::config("linalg check needs a matrix size n >= 1"));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut rows = vec![
        det_exp(n, &mut rng)?,
        exp_inverse(n, &mut rng)?,
        log_exp(n, &mut rng)?,
        exp_diag(n, &mut rng)?,
        rotation(n, &mut rng)?,
        nilpotent(n, &mut rng)?,
        logdet_trace_log(n, &mut rng)?,
    ];
    rows.extend(rank_one(n, &mut rng)?);
    let identities: Vec<Value> = rows.iter().map(Row::to_json).collect();
    let all_passed = rows.iter().all(|r| r.error <= r.bound);
    Ok(json!({
        "n": n,
        "seed": seed,
        "unit_roundoff": U,
        "identities": identities,
        "all_passed": all_passed,
    }))
}
