//! The matrix exponential (Higham 2005 scaling and squaring): SPEC section 2 identities on random
//! and structured matrices of sizes 1 to 64, agreement with independent computations (a long
//! Taylor series, libtorch's `linalg_matrix_exp`, the exact Frechet derivative), plain vs tensor
//! versions, single precision, batches and gradients.
//!
//! Error bounds are stated as multiples of `n u` (`u = 2^-53`), scaled by the norms the
//! perturbation theory says the error grows with; each constant leaves a margin of several times
//! the largest error seen.

use genflow::linalg::batch::log_abs_det;
use genflow::linalg::dense::Matrix;
use genflow::linalg::expm::{expm, pade_coefficients, THETA_DOUBLE, THETA_SINGLE};
use genflow::Error;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tch::{Kind, Tensor};

const U: f64 = f64::EPSILON / 2.0;
const SIZES: [usize; 8] = [1, 2, 3, 5, 8, 16, 33, 64];

/// `n x n` with `N(0, scale^2 / n)` entries: spectral radius about `scale`.
fn random(n: usize, scale: f64, rng: &mut StdRng) -> Matrix {
    Matrix::random_normal(n, n, scale / (n as f64).sqrt(), rng)
}

fn t(m: &Matrix) -> Tensor {
    m.to_tensor().unwrap()
}

fn m(t: &Tensor) -> Matrix {
    Matrix::from_tensor(t).unwrap()
}

/// Asserts `error <= bound` and returns the ratio (printed by `--nocapture` runs).
fn within(what: &str, error: f64, bound: f64) -> f64 {
    assert!(
        error <= bound,
        "{what}: error {error:e} exceeds the bound {bound:e}"
    );
    error / bound
}

#[test]
fn pade_coefficients_match_higham_2005() {
    // Higham 2005, section 2 (and its expm code): b_0..b_13 for m = 13; b for m = 3.
    let b13 = [
        64764752532480000.0,
        32382376266240000.0,
        7771770303897600.0,
        1187353796428800.0,
        129060195264000.0,
        10559470521600.0,
        670442572800.0,
        33522128640.0,
        1323241920.0,
        40840800.0,
        960960.0,
        16380.0,
        182.0,
        1.0,
    ];
    for (got, want) in pade_coefficients(13).iter().zip(b13) {
        assert!((got / want - 1.0).abs() < 4.0 * U, "{got} vs {want}");
    }
    assert_eq!(pade_coefficients(3), vec![120.0, 60.0, 12.0, 1.0]);
    assert_eq!(THETA_DOUBLE.last().unwrap().0, 13);
    assert_eq!(THETA_SINGLE.last().unwrap().0, 7);
}

#[test]
fn det_exp_equals_exp_trace() {
    // ln|det exp A| by LU vs tr A. exp(A) carries a relative error of order n u |A|_1 (backward
    // stable scaling and squaring); ln|det| amplifies it by the condition number
    // kappa = |exp A|_1 |exp(-A)|_1 (the small eigenvalues of exp A), so the bound is
    // c n u |A|_1 kappa. Spectral radii up to 8 keep kappa below about 1e8.
    let mut rng = StdRng::seed_from_u64(1);
    let mut worst = 0.0f64;
    for n in SIZES {
        for scale in [1e-3, 0.5, 2.0, 5.0, 8.0] {
            let a = random(n, scale, &mut rng);
            let tr = a.trace().unwrap();
            let e = a.expm().unwrap();
            let kappa = e.norm1() * a.scale(-1.0).expm().unwrap().norm1();
            let bound = 10.0 * n as f64 * U * a.norm1().max(1.0) * kappa;
            let err = (e.log_abs_det().unwrap() - tr).abs();
            worst = worst.max(within("det exp", err, bound));
            // The tensor version, through libtorch's LU.
            let ld = log_abs_det(&expm(&t(&a)).unwrap())
                .unwrap()
                .double_value(&[]);
            worst = worst.max(within("det exp (tch)", (ld - tr).abs(), bound));
        }
    }
    println!("det_exp worst ratio {worst:.3}");
}

#[test]
fn exp_times_exp_of_negative_is_identity() {
    // exp(A) exp(-A) = I up to n u |exp A|_1 |exp -A|_1 (rounding in both factors and the product).
    let mut rng = StdRng::seed_from_u64(2);
    let mut worst = 0.0f64;
    for n in SIZES {
        for scale in [1e-3, 0.5, 2.0, 8.0] {
            let a = random(n, scale, &mut rng);
            let (e, f) = (a.expm().unwrap(), a.scale(-1.0).expm().unwrap());
            let err = e
                .matmul(&f)
                .unwrap()
                .max_abs_diff(&Matrix::identity(n))
                .unwrap();
            worst = worst.max(within(
                "exp(A)exp(-A)",
                err,
                20.0 * n as f64 * U * e.norm1() * f.norm1(),
            ));
        }
    }
    println!("exp inverse worst ratio {worst:.3}");
}

#[test]
fn exp_of_diagonal_is_diagonal_of_exp() {
    // Relative error of order u |d|: the Pade backward error u |d| (exp(d + delta) = e^d (1 + delta))
    // and the rounding of the Pade quotient (its denominator q(x) = p(-x) cancels for x > 0),
    // doubled by each squaring. Measured: up to 20 u |d| for |d| <= 40.
    let mut rng = StdRng::seed_from_u64(3);
    for n in SIZES {
        let d: Vec<f64> = (0..n).map(|_| rng.random_range(-40.0..40.0)).collect();
        let e = Matrix::from_diag(&d).expm().unwrap();
        let diag = e.diag();
        for (v, di) in diag.iter().zip(&d) {
            within(
                "exp(diag)",
                (v / di.exp() - 1.0).abs(),
                100.0 * U * di.abs().max(1.0),
            );
        }
        assert_eq!(e.sub(&Matrix::from_diag(&diag)).unwrap().max_abs(), 0.0);
    }
}

#[test]
fn rotation_generator_gives_rotation() {
    // exp of t (e_j e_i^T - e_i e_j^T) is the rotation by t in the plane (i, j); block-diagonal
    // generators give block rotations. Error of order u max(1, |t|) (angle reduction by squaring).
    for n in [2usize, 3, 8, 64] {
        for t in [0.0, 1e-8, 0.3, 1.5, std::f64::consts::PI, 10.0, 100.0] {
            let mut g = Matrix::zeros(n, n).data().to_vec();
            let mut exact = Matrix::identity(n).data().to_vec();
            for b in 0..n / 2 {
                let (i, j) = (2 * b, 2 * b + 1);
                let tb = t / (b + 1) as f64;
                g[j * n + i] = tb;
                g[i * n + j] = -tb;
                exact[i * n + i] = tb.cos();
                exact[j * n + j] = tb.cos();
                exact[j * n + i] = tb.sin();
                exact[i * n + j] = -tb.sin();
            }
            let r = Matrix::from_vec(n, n, g).unwrap().expm().unwrap();
            let err = r
                .max_abs_diff(&Matrix::from_vec(n, n, exact).unwrap())
                .unwrap();
            within("rotation", err, 20.0 * U * f64::max(1.0, t));
            let orth = r
                .transpose()
                .matmul(&r)
                .unwrap()
                .max_abs_diff(&Matrix::identity(n))
                .unwrap();
            within("orthogonality", orth, 20.0 * U * f64::max(1.0, t));
        }
    }
}

#[test]
fn nilpotent_matrix_gives_the_finite_series() {
    // The shift N (ones above the diagonal): exp(N)_{ij} = 1/(j-i)! exactly. A random strictly
    // upper-triangular N: exp(N) = sum_{k<n} N^k / k! (computed by the plain series).
    for n in SIZES {
        let shift = Matrix::from_vec(
            n,
            n,
            (0..n * n)
                .map(|k| f64::from(u8::from(k % n == k / n + 1)))
                .collect(),
        )
        .unwrap();
        let e = shift.scale(3.0).expm().unwrap();
        for i in 0..n {
            for j in 0..n {
                let want = if j >= i {
                    3f64.powi((j - i) as i32) / (1..=j - i).map(|k| k as f64).product::<f64>()
                } else {
                    0.0
                };
                within(
                    "shift",
                    (e.get(i, j).unwrap() - want).abs(),
                    100.0 * U * want.max(1.0),
                );
            }
        }
    }
    let mut rng = StdRng::seed_from_u64(4);
    for n in SIZES {
        let r = random(n, 3.0, &mut rng);
        let a = Matrix::from_vec(
            n,
            n,
            (0..n * n)
                .map(|k| if k % n > k / n { r.data()[k] } else { 0.0 })
                .collect(),
        )
        .unwrap();
        let (mut term, mut series) = (Matrix::identity(n), Matrix::identity(n));
        for k in 1..n {
            term = term.matmul(&a).unwrap().scale(1.0 / k as f64);
            series = series.add(&term).unwrap();
        }
        let err = a.expm().unwrap().max_abs_diff(&series).unwrap();
        within(
            "nilpotent",
            err,
            50.0 * n as f64 * U * series.max_abs().max(1.0),
        );
    }
}

/// `exp(A)` by 40 Taylor terms in f64: truncation below `|A|^40 / 40! < 1.3e-48` for `|A|_1 <= 1`.
fn taylor(a: &Matrix) -> Matrix {
    let n = a.rows();
    let (mut term, mut sum) = (Matrix::identity(n), Matrix::identity(n));
    for k in 1..40 {
        term = term.matmul(a).unwrap().scale(1.0 / k as f64);
        sum = sum.add(&term).unwrap();
    }
    sum
}

#[test]
fn matches_a_long_taylor_series_for_small_norms() {
    // Every Pade degree 3..13 is exercised (|A|_1 from 1e-3 to 1, scaled up to theta_13 by
    // exp(A) = exp(A/k)^k is not needed: these norms select degrees 3, 5, 7, 9 directly).
    let mut rng = StdRng::seed_from_u64(5);
    let mut worst = 0.0f64;
    for n in SIZES {
        for norm in [1e-3, 0.01, 0.2, 0.9, 1.0] {
            let r = random(n, 1.0, &mut rng);
            let a = r.scale(norm / r.norm1());
            let e = a.expm().unwrap();
            let err = e.max_abs_diff(&taylor(&a)).unwrap();
            worst = worst.max(within("taylor", err, 20.0 * n as f64 * U));
            let et = m(&expm(&t(&a)).unwrap());
            worst = worst.max(within(
                "taylor (tch)",
                et.max_abs_diff(&taylor(&a)).unwrap(),
                20.0 * n as f64 * U,
            ));
        }
    }
    println!("taylor worst ratio {worst:.3}");
}

#[test]
fn matches_libtorch_matrix_exp_for_large_norms() {
    // libtorch's matrix_exp uses a different algorithm (Bader, Blanes & Casas 2019: Taylor
    // polynomials with its own scaling). Both have backward error of order u, so they agree to the
    // condition of exp: relative difference of order n u |A|_1.
    let mut rng = StdRng::seed_from_u64(6);
    let mut worst = 0.0f64;
    for n in SIZES {
        for scale in [0.5, 3.0, 10.0, 50.0] {
            let a = random(n, scale, &mut rng);
            let ours = m(&expm(&t(&a)).unwrap());
            let theirs = m(&t(&a).linalg_matrix_exp());
            let err = ours.max_abs_diff(&theirs).unwrap() / theirs.max_abs();
            worst = worst.max(within(
                "vs libtorch",
                err,
                20.0 * n as f64 * U * a.norm1().max(1.0),
            ));
        }
    }
    println!("libtorch worst ratio {worst:.3}");
}

#[test]
fn plain_and_tensor_versions_agree() {
    // The same algorithm with different summation orders in the products and solves.
    let mut rng = StdRng::seed_from_u64(7);
    let mut worst = 0.0f64;
    for n in SIZES {
        for scale in [1e-3, 0.5, 3.0, 20.0] {
            let a = random(n, scale, &mut rng);
            let plain = a.expm().unwrap();
            let err = m(&expm(&t(&a)).unwrap()).max_abs_diff(&plain).unwrap() / plain.max_abs();
            worst = worst.max(within(
                "plain vs tch",
                err,
                10.0 * n as f64 * U * a.norm1().max(1.0),
            ));
        }
    }
    println!("plain vs tch worst ratio {worst:.3}");
}

#[test]
fn single_precision_is_accurate_to_its_unit_roundoff() {
    // f32 uses the single-precision thresholds (degree <= 7); relative error of order n u_32 |A|_1.
    let u32_ = f64::from(f32::EPSILON) / 2.0;
    let mut rng = StdRng::seed_from_u64(8);
    let mut worst = 0.0f64;
    for n in SIZES {
        for scale in [1e-3, 0.3, 2.0, 10.0] {
            let a = random(n, scale, &mut rng);
            let single = m(&expm(&t(&a).to_kind(Kind::Float)).unwrap());
            let double = a.expm().unwrap();
            let err = single.max_abs_diff(&double).unwrap() / double.max_abs();
            worst = worst.max(within(
                "f32",
                err,
                10.0 * n as f64 * u32_ * a.norm1().max(1.0),
            ));
        }
    }
    println!("f32 worst ratio {worst:.3}");
}

#[test]
fn batches_scale_each_matrix_separately() {
    // A [2, 3, n, n] batch with norms from 1e-4 to 100 equals the matrices taken one at a time.
    let mut rng = StdRng::seed_from_u64(9);
    let n = 6;
    let scales = [1e-4, 0.1, 1.0, 5.0, 30.0, 100.0];
    let mats: Vec<Matrix> = scales.iter().map(|&s| random(n, s, &mut rng)).collect();
    let stacked = Tensor::stack(&mats.iter().map(t).collect::<Vec<_>>(), 0)
        .reshape([2, 3, n as i64, n as i64]);
    let batched = expm(&stacked).unwrap().reshape([6, n as i64, n as i64]);
    for (i, a) in mats.iter().enumerate() {
        let single = a.expm().unwrap();
        let err = m(&batched.get(i as i64)).max_abs_diff(&single).unwrap() / single.max_abs();
        within("batch", err, 10.0 * n as f64 * U * a.norm1().max(1.0));
    }
}

/// The Frechet derivative `L(A, E)` of exp: the upper-right block of `exp([[A, E], [0, A]])`
/// (Higham, Functions of Matrices, 2008, eq. 3.16).
fn frechet(a: &Matrix, e: &Matrix) -> Matrix {
    let n = a.rows();
    let mut big = Matrix::zeros(2 * n, 2 * n).data().to_vec();
    for i in 0..n {
        for j in 0..n {
            big[i * 2 * n + j] = a.get(i, j).unwrap();
            big[(n + i) * 2 * n + n + j] = a.get(i, j).unwrap();
            big[i * 2 * n + n + j] = e.get(i, j).unwrap();
        }
    }
    let f = Matrix::from_vec(2 * n, 2 * n, big).unwrap().expm().unwrap();
    Matrix::from_vec(
        n,
        n,
        (0..n * n)
            .map(|k| f.get(k / n, n + k % n).unwrap())
            .collect(),
    )
    .unwrap()
}

#[test]
fn gradient_matches_the_exact_frechet_derivative_and_finite_differences() {
    // For L = <R, exp(A)>, dL/dA = L(A^T, R). Autodiff runs through the Pade solve and the
    // squarings (norms up to 20 need 2 squarings). Finite differences: central, step 1e-6, error
    // of order step^2 |exp|''' + u/step, below 1e-7 relative here.
    let mut rng = StdRng::seed_from_u64(10);
    for (n, scale) in [(1usize, 3.0), (3, 0.05), (4, 2.0), (5, 20.0)] {
        let a = random(n, scale, &mut rng);
        let r = random(n, 1.0, &mut rng);
        let at = t(&a).set_requires_grad(true);
        let loss = (expm(&at).unwrap() * t(&r)).sum(Kind::Double);
        loss.backward();
        let grad = m(&at.grad());
        let exact = frechet(&a.transpose(), &r);
        within(
            "frechet",
            grad.max_abs_diff(&exact).unwrap() / exact.max_abs(),
            100.0 * n as f64 * U * a.norm1().max(1.0),
        );
        let f = |b: &Matrix| -> f64 {
            b.expm()
                .unwrap()
                .data()
                .iter()
                .zip(r.data())
                .map(|(x, y)| x * y)
                .sum()
        };
        let h = 1e-6;
        for k in 0..n * n {
            let mut plus = a.data().to_vec();
            let mut minus = a.data().to_vec();
            plus[k] += h;
            minus[k] -= h;
            let fd = (f(&Matrix::from_vec(n, n, plus).unwrap())
                - f(&Matrix::from_vec(n, n, minus).unwrap()))
                / (2.0 * h);
            let g = grad.data()[k];
            within(
                "finite differences",
                (fd - g).abs(),
                1e-7 * exact.max_abs().max(1.0),
            );
        }
    }
}

#[test]
fn invalid_inputs_are_errors() {
    let rect = Tensor::zeros([2, 3], (Kind::Double, tch::Device::Cpu));
    assert!(matches!(expm(&rect), Err(Error::Shape(_))));
    assert!(matches!(
        expm(&Tensor::zeros([3], (Kind::Double, tch::Device::Cpu))),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        expm(&Tensor::zeros([2, 2], (Kind::Int64, tch::Device::Cpu))),
        Err(Error::Shape(_))
    ));
    let nan = Tensor::from_slice(&[1.0, f64::NAN, 0.0, 1.0]).reshape([2, 2]);
    assert!(matches!(expm(&nan), Err(Error::NonFinite(_))));
    assert!(matches!(Matrix::zeros(2, 3).expm(), Err(Error::Shape(_))));
    let empty = Tensor::zeros([0, 3, 3], (Kind::Double, tch::Device::Cpu));
    assert_eq!(expm(&empty).unwrap().size(), vec![0, 3, 3]);
    let zero_size = Tensor::zeros([2, 0, 0], (Kind::Double, tch::Device::Cpu));
    assert_eq!(expm(&zero_size).unwrap().size(), vec![2, 0, 0]);
}
