//! The matrix logarithm (inverse scaling and squaring), square root, LU log-determinant and trace:
//! `log(exp A) = A`, `exp(log B) = B`, `ln det B = tr ln B` on random and structured matrices of
//! sizes 1 to 64, plain vs tensor versions, and the accuracy argument for the Pade threshold.
//!
//! Bounds are multiples of `n u` scaled by the relevant norms; each constant leaves a margin of
//! several times the largest error seen.

use genflow::linalg::batch::{log_abs_det, trace};
use genflow::linalg::dense::Matrix;
use genflow::linalg::logm::{gauss_legendre, logm, sqrtm, LOG_PADE_DEGREE, LOG_PADE_THETA};
use genflow::Error;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tch::{Kind, Tensor};

const U: f64 = f64::EPSILON / 2.0;
const SIZES: [usize; 8] = [1, 2, 3, 5, 8, 16, 33, 64];

fn random(n: usize, scale: f64, rng: &mut StdRng) -> Matrix {
    Matrix::random_normal(n, n, scale / (n as f64).sqrt(), rng)
}

/// `I + G` with `|G|_1 = radius < 1`: every eigenvalue lies within `radius` of 1, away from the
/// negative real axis.
fn near_identity(n: usize, radius: f64, rng: &mut StdRng) -> Matrix {
    let g = random(n, 1.0, rng);
    g.scale(radius / g.norm1()).add_identity(1.0).unwrap()
}

/// A symmetric positive definite matrix with eigenvalues spread over `[1/c, 1]`-ish: `Q D Q^T`
/// with `Q` from `exp` of a skew matrix and `D` log-uniform.
fn spd(n: usize, cond: f64, rng: &mut StdRng) -> Matrix {
    let g = random(n, 2.0, rng);
    let q = g.sub(&g.transpose()).unwrap().expm().unwrap();
    let d: Vec<f64> = (0..n)
        .map(|_| cond.powf(-rng.random_range(0.0..1.0)))
        .collect();
    q.matmul(&Matrix::from_diag(&d))
        .unwrap()
        .matmul(&q.transpose())
        .unwrap()
}

fn t(m: &Matrix) -> Tensor {
    m.to_tensor().unwrap()
}

fn m(t: &Tensor) -> Matrix {
    Matrix::from_tensor(t).unwrap()
}

fn within(what: &str, error: f64, bound: f64) -> f64 {
    assert!(
        error <= bound,
        "{what}: error {error:e} exceeds the bound {bound:e}"
    );
    error / bound
}

#[test]
fn gauss_legendre_rule_is_exact_to_degree_2m_minus_1() {
    for m in [1usize, 2, 5, 8, 12] {
        let (nodes, weights) = gauss_legendre(m);
        for k in 0..2 * m {
            let integral: f64 = nodes
                .iter()
                .zip(&weights)
                .map(|(x, w)| w * x.powi(k as i32))
                .sum();
            within(
                "quadrature",
                (integral - 1.0 / (k + 1) as f64).abs(),
                8.0 * U,
            );
        }
    }
}

#[test]
fn pade_threshold_keeps_the_truncation_error_at_the_rounding_level() {
    // Kenney & Laub: |r_m(X) - log(I + X)| <= |r_m(-x) - log(1 - x)| for |X| <= x. At the
    // threshold x = 1/4 with m = 8 the scalar error is below 3e-16 (the evaluation itself rounds
    // at about 1e-16), so the approximant is exact to working precision.
    let (nodes, weights) = gauss_legendre(LOG_PADE_DEGREE);
    let x = -LOG_PADE_THETA;
    let r: f64 = nodes
        .iter()
        .zip(&weights)
        .map(|(t, w)| w * x / (1.0 + t * x))
        .sum();
    let err = (r - (1.0 + x).ln()).abs();
    println!("scalar Pade error at the threshold: {err:e}");
    within("Kenney-Laub bound", err, 3e-16);
}

#[test]
fn log_of_exp_recovers_a() {
    // Holds when the eigenvalues of A have |Im| < pi (here spectral radius <= 2). Relative error of
    // order n u |A|_1 kappa(exp A) (kappa: the condition of log at exp(A)); bound 100 n u |A|_1
    // kappa, errors seen up to 9 n u |A|_1 kappa.
    let mut rng = StdRng::seed_from_u64(11);
    let mut worst = 0.0f64;
    for n in SIZES {
        for scale in [1e-6, 0.1, 0.5, 1.0, 2.0] {
            let a = random(n, scale, &mut rng);
            let e = a.expm().unwrap();
            let kappa = e.norm1() * a.scale(-1.0).expm().unwrap().norm1();
            let bound = 100.0 * n as f64 * U * kappa * a.norm1().max(1.0);
            let err = e.logm().unwrap().max_abs_diff(&a).unwrap() / a.max_abs().max(1.0);
            worst = worst.max(within("log(exp A)", err, bound));
            let et = logm(&t(&e)).unwrap();
            worst = worst.max(within(
                "log(exp A) (tch)",
                m(&et).max_abs_diff(&a).unwrap() / a.max_abs().max(1.0),
                bound,
            ));
        }
    }
    println!("log(exp A) worst ratio {worst:.3}");
}

#[test]
fn exp_of_log_recovers_b() {
    // B = I + G with |G|_1 = 0.9 and SPD B with condition 1e4. The k square roots amplify their
    // rounding by 2^k (k grows like log2 |log B|), so the bound is 100 n u kappa(B) |log B|_1;
    // errors seen up to 10 n u kappa |log B|_1.
    let mut rng = StdRng::seed_from_u64(12);
    let mut worst = 0.0f64;
    for n in SIZES {
        for b in [near_identity(n, 0.9, &mut rng), spd(n, 1e4, &mut rng)] {
            let kappa = b.norm1() * b.inverse().unwrap().norm1();
            let l = b.logm().unwrap();
            let err = l.expm().unwrap().max_abs_diff(&b).unwrap() / b.max_abs();
            worst = worst.max(within(
                "exp(log B)",
                err,
                100.0 * n as f64 * U * kappa * l.norm1().max(1.0),
            ));
        }
    }
    println!("exp(log B) worst ratio {worst:.3}");
}

#[test]
fn log_det_equals_trace_of_log() {
    // ln det B (LU) = tr ln B, for nonsymmetric B = I + G (|G|_1 = 0.5, 0.9) and SPD B (condition
    // up to 1e6). The trace of log B errs by the 2^k-amplified rounding of the square roots, of
    // order n u |log B|_1, and more for ill-conditioned B: bound 300 n u |log B|_1 max(1, ln kappa);
    // errors seen up to 40 (plain) and 104 (tensor) in these units, both for SPD B with kappa 1e5.
    let mut rng = StdRng::seed_from_u64(13);
    let mut worst = 0.0f64;
    for n in SIZES {
        let cases = [
            near_identity(n, 0.5, &mut rng),
            near_identity(n, 0.9, &mut rng),
            spd(n, 1e2, &mut rng),
            spd(n, 1e6, &mut rng),
        ];
        for b in cases {
            let ld = b.log_abs_det().unwrap();
            let kappa = b.norm1() * b.inverse().unwrap().norm1();
            let l = b.logm().unwrap();
            let bound = 300.0 * n as f64 * U * kappa.ln().max(1.0) * l.norm1().max(1.0);
            worst = worst.max(within(
                "ln det = tr ln",
                (l.trace().unwrap() - ld).abs(),
                bound,
            ));
            let tr = trace(&logm(&t(&b)).unwrap()).unwrap().double_value(&[]);
            let ld_t = log_abs_det(&t(&b)).unwrap().double_value(&[]);
            worst = worst.max(within("ln det = tr ln (tch)", (tr - ld_t).abs(), bound));
        }
    }
    println!("ln det = tr ln worst ratio {worst:.3}");
}

#[test]
fn log_of_structured_matrices() {
    // log(diag d) = diag(log d); log of the rotation by t (|t| < pi) is t J.
    for n in SIZES {
        let d: Vec<f64> = (0..n)
            .map(|i| 10f64.powf(i as f64 / n as f64 * 6.0 - 3.0))
            .collect();
        let l = Matrix::from_diag(&d).logm().unwrap();
        let want = Matrix::from_diag(&d.iter().map(|v| v.ln()).collect::<Vec<_>>());
        within("log(diag)", l.max_abs_diff(&want).unwrap(), 100.0 * U * 7.0);
    }
    for angle in [1e-9, 0.5, 2.0, 3.0] {
        let (c, s) = (f64::cos(angle), f64::sin(angle));
        let r = Matrix::from_rows(&[vec![c, -s], vec![s, c]]).unwrap();
        let want = Matrix::from_rows(&[vec![0.0, -angle], vec![angle, 0.0]]).unwrap();
        // Near t = pi the logarithm is ill conditioned (eigenvalues approach -1): kappa ~ 1/(pi - t).
        let bound = 100.0 * U / (std::f64::consts::PI - angle);
        within(
            "log(rotation)",
            r.logm().unwrap().max_abs_diff(&want).unwrap(),
            bound,
        );
    }
}

#[test]
fn square_root_squares_back() {
    let mut rng = StdRng::seed_from_u64(14);
    for n in SIZES {
        let b = spd(n, 1e3, &mut rng);
        let r = b.sqrtm().unwrap();
        let err = r.matmul(&r).unwrap().max_abs_diff(&b).unwrap() / b.max_abs();
        within("sqrt", err, 10.0 * n as f64 * U * 1e3f64.sqrt());
        let rt = m(&sqrtm(&t(&b)).unwrap());
        within(
            "sqrt (tch)",
            rt.max_abs_diff(&r).unwrap() / r.max_abs(),
            10.0 * n as f64 * U * 1e3,
        );
    }
}

#[test]
fn plain_tensor_and_single_precision_versions_agree() {
    let u32_ = f64::from(f32::EPSILON) / 2.0;
    let mut rng = StdRng::seed_from_u64(15);
    for n in SIZES {
        let b = near_identity(n, 0.8, &mut rng);
        let kappa = b.norm1() * b.inverse().unwrap().norm1();
        let plain = b.logm().unwrap();
        let scale = plain.max_abs().max(1.0);
        let double = m(&logm(&t(&b)).unwrap());
        within(
            "plain vs tch",
            double.max_abs_diff(&plain).unwrap() / scale,
            10.0 * n as f64 * U * kappa,
        );
        let single = m(&logm(&t(&b).to_kind(Kind::Float)).unwrap());
        within(
            "f32",
            single.max_abs_diff(&plain).unwrap() / scale,
            10.0 * n as f64 * u32_ * kappa,
        );
    }
}

#[test]
fn batches_take_square_roots_per_matrix() {
    // [2, 2, n, n]: matrices near I (no root) next to ones needing many roots.
    let mut rng = StdRng::seed_from_u64(16);
    let n = 5;
    let mats = [
        Matrix::identity(n),
        near_identity(n, 0.01, &mut rng),
        spd(n, 1e3, &mut rng),
        near_identity(n, 0.7, &mut rng).scale(30.0),
    ];
    let stacked = Tensor::stack(&mats.iter().map(t).collect::<Vec<_>>(), 0)
        .reshape([2, 2, n as i64, n as i64]);
    let batched = logm(&stacked).unwrap().reshape([4, n as i64, n as i64]);
    for (i, b) in mats.iter().enumerate() {
        let single = b.logm().unwrap();
        let err =
            m(&batched.get(i as i64)).max_abs_diff(&single).unwrap() / single.max_abs().max(1.0);
        within("batch", err, 1e4 * n as f64 * U);
    }
}

#[test]
fn lu_log_determinant_and_trace_match_known_values() {
    // det of [[0, 2, 0], [1, 0, 0], [0, 0, -3]] = 6 (needs a pivot swap); a triangular matrix's
    // determinant is the product of its diagonal.
    let p = Matrix::from_rows(&[
        vec![0.0, 2.0, 0.0],
        vec![1.0, 0.0, 0.0],
        vec![0.0, 0.0, -3.0],
    ])
    .unwrap();
    within(
        "pivoted det",
        (p.log_abs_det().unwrap() - 6f64.ln()).abs(),
        4.0 * U,
    );
    assert_eq!(p.lu().unwrap().sign(), 1.0);
    assert_eq!(p.trace().unwrap(), -3.0);
    let mut rng = StdRng::seed_from_u64(17);
    for n in SIZES {
        let r = random(n, 1.0, &mut rng);
        let upper = Matrix::from_vec(
            n,
            n,
            (0..n * n)
                .map(|k| {
                    if k % n >= k / n {
                        r.data()[k] + f64::from(u8::from(k % n == k / n))
                    } else {
                        0.0
                    }
                })
                .collect(),
        )
        .unwrap();
        let want: f64 = upper.diag().iter().map(|v| v.abs().ln()).sum();
        within(
            "triangular",
            (upper.log_abs_det().unwrap() - want).abs(),
            4.0 * n as f64 * U * want.abs().max(1.0),
        );
        // LU (plain) vs libtorch's slogdet, and the traces.
        let a = random(n, 1.0, &mut rng);
        let ld = log_abs_det(&t(&a)).unwrap().double_value(&[]);
        let kappa = a.norm1() * a.inverse().unwrap().norm1();
        within(
            "LU vs slogdet",
            (a.log_abs_det().unwrap() - ld).abs(),
            10.0 * n as f64 * U * kappa,
        );
        let tr = trace(&t(&a)).unwrap().double_value(&[]);
        within(
            "trace",
            (a.trace().unwrap() - tr).abs(),
            n as f64 * U * a.max_abs(),
        );
        // Solve and inverse.
        let x = a.solve(&r).unwrap();
        within(
            "solve",
            a.matmul(&x).unwrap().max_abs_diff(&r).unwrap(),
            10.0 * n as f64 * U * kappa * r.max_abs(),
        );
    }
    let singular = Matrix::from_rows(&[vec![1.0, 2.0], vec![2.0, 4.0]]).unwrap();
    assert_eq!(singular.log_abs_det().unwrap(), f64::NEG_INFINITY);
    assert!(matches!(singular.inverse(), Err(Error::NonFinite(_))));
}

#[test]
fn no_principal_logarithm_is_an_error() {
    // Eigenvalue -1: no principal (real) logarithm; a singular matrix: log 0 = -inf.
    let neg = Matrix::from_diag(&[-1.0, 2.0]);
    assert!(neg.logm().is_err());
    assert!(logm(&t(&neg)).is_err());
    assert!(Matrix::from_diag(&[0.0, 1.0]).logm().is_err());
    assert!(matches!(Matrix::zeros(2, 3).logm(), Err(Error::Shape(_))));
    assert!(matches!(
        trace(&Tensor::zeros([3], (Kind::Double, tch::Device::Cpu))),
        Err(Error::Shape(_))
    ));
}
