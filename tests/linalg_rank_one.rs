//! The explicit rank-one exponential `exp(x y^T) = I + (expm1(s)/s) x y^T` against the general
//! matrix exponential, its inverse `exp(-x y^T)` and determinant `e^s`, at `s = 0` and for `|s|`
//! up to 30; the batched tensor version (apply, inverse, log-det) and its gradients.

use genflow::linalg::dense::Matrix;
use genflow::linalg::rank_one::{
    expm1_over_s, expm1_over_s_tensor, rank_one_exp_apply, rank_one_exp_dense,
    rank_one_exp_inverse, rank_one_exp_logdet, SERIES_THRESHOLD,
};
use genflow::Error;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tch::{Kind, Tensor};

const U: f64 = f64::EPSILON / 2.0;

fn within(what: &str, error: f64, bound: f64) {
    assert!(
        error <= bound,
        "{what}: error {error:e} exceeds the bound {bound:e}"
    );
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Random `x, y` of length `d` with `y^T x = s` exactly up to rounding (`y` projected).
fn pair(d: usize, s: f64, rng: &mut StdRng) -> (Vec<f64>, Vec<f64>) {
    let x = Matrix::random_normal(d, 1, 1.0, rng).data().to_vec();
    let y0 = Matrix::random_normal(d, 1, 1.0, rng).data().to_vec();
    let c = (s - dot(&x, &y0)) / dot(&x, &x);
    (
        x.clone(),
        y0.iter().zip(&x).map(|(y, xi)| y + c * xi).collect(),
    )
}

const TARGETS: [f64; 13] = [
    -30.0, -10.0, -1.0, -0.1, -1e-3, -1e-12, 0.0, 1e-12, 1e-3, 0.1, 1.0, 10.0, 30.0,
];

#[test]
fn expm1_over_s_matches_libm_and_is_one_at_zero() {
    // Reference: libm's expm1(s)/s (correct to about 1 ulp) for s != 0; bound 4 ulp (f64 and f32).
    assert_eq!(expm1_over_s(0.0), 1.0);
    let zero = expm1_over_s_tensor(&Tensor::from_slice(&[0.0f64])).unwrap();
    assert_eq!(zero.double_value(&[0]), 1.0);
    let grid: Vec<f64> = (-300..=300)
        .map(|k| k as f64 / 10.0)
        .chain([
            1e-300,
            -1e-20,
            1e-8,
            SERIES_THRESHOLD,
            -SERIES_THRESHOLD,
            0.0999999,
        ])
        .collect();
    let tensor = expm1_over_s_tensor(&Tensor::from_slice(&grid)).unwrap();
    let single = expm1_over_s_tensor(&Tensor::from_slice(&grid).to_kind(Kind::Float))
        .unwrap()
        .to_kind(Kind::Double);
    for (i, &s) in grid.iter().enumerate() {
        let want = if s == 0.0 { 1.0 } else { s.exp_m1() / s };
        within("scalar phi", (expm1_over_s(s) / want - 1.0).abs(), 4.0 * U);
        within(
            "tensor phi",
            (tensor.double_value(&[i as i64]) / want - 1.0).abs(),
            4.0 * U,
        );
        // f32: against the reference at the f32-rounded argument (rounding s costs s u_32).
        let s32 = f64::from(s as f32);
        let want32 = if s32 == 0.0 { 1.0 } else { s32.exp_m1() / s32 };
        within(
            "f32 phi",
            (single.double_value(&[i as i64]) / want32 - 1.0).abs(),
            4.0 * f64::from(f32::EPSILON),
        );
    }
}

#[test]
fn derivative_of_phi_is_accurate_across_the_series_threshold() {
    // phi'(s) = sum_{k>=1} k s^{k-1} / (k+1)! (30 terms, |s| <= 1) and (s e^s - expm1 s)/s^2 beyond.
    let grid: Vec<f64> = vec![
        -5.0, -1.0, -0.3, -0.1, -0.0999, -1e-3, 0.0, 1e-6, 0.05, 0.0999, 0.1, 0.2, 0.7, 3.0,
    ];
    let s = Tensor::from_slice(&grid).set_requires_grad(true);
    expm1_over_s_tensor(&s)
        .unwrap()
        .sum(Kind::Double)
        .backward();
    let grad = s.grad();
    for (i, &v) in grid.iter().enumerate() {
        let want = if v.abs() <= 1.0 {
            let mut fact = 1.0;
            (1..30i32)
                .map(|k| {
                    fact *= f64::from(k + 1);
                    f64::from(k) * v.powi(k - 1) / fact
                })
                .sum::<f64>()
        } else {
            (v * v.exp() - v.exp_m1()) / (v * v)
        };
        // The expm1(s)/s branch loses about u/|s| <= 10 u to cancellation in the quotient rule.
        within(
            "phi'",
            (grad.double_value(&[i as i64]) - want).abs(),
            40.0 * U,
        );
    }
}

#[test]
fn closed_form_equals_the_general_exponential_inverse_and_determinant() {
    // Entries of the closed form err by about u N, N = max(1, |phi(s) x y^T|_1) (the size of the
    // summands; for s << 0 the eigenvalue e^s = 1 + phi(s) s along x is formed with absolute, not
    // relative, error u). Matrix::expm (Higham 2005) errs by d u |x y^T|_1 |E| (condition of exp).
    // So: |closed - expm| <= 20 d u max(1, |x y^T|_1) max(N, max|E|); the products with the
    // inverse are I up to 10 d u (N |E^-1|_1 + N_inv |E|_1); ln|det| by LU equals s up to
    // 10 d u N |E^-1|_1 (first order: tr(E^-1 dE)).
    let mut rng = StdRng::seed_from_u64(21);
    for d in [1usize, 2, 5, 16, 64] {
        for s in TARGETS {
            if d == 1 && s == 0.0 {
                continue; // x y = 0 with x != 0 forces y = 0: covered by the exact case below.
            }
            let (x, y) = pair(d, s, &mut rng);
            let s_exact = dot(&x, &y);
            let neg_x: Vec<f64> = x.iter().map(|v| -v).collect();
            let outer = Matrix::outer(&x, &y);
            let e = rank_one_exp_dense(&x, &y).unwrap();
            let inv = rank_one_exp_dense(&neg_x, &y).unwrap();
            let n_e = (expm1_over_s(s_exact).abs() * outer.norm1()).max(1.0);
            let n_inv = (expm1_over_s(-s_exact).abs() * outer.norm1()).max(1.0);
            let general = outer.expm().unwrap();
            let bound = 20.0 * d as f64 * U * outer.norm1().max(1.0);
            within(
                "closed form",
                e.max_abs_diff(&general).unwrap(),
                bound * n_e.max(general.max_abs()),
            );
            let general_inv = outer.scale(-1.0).expm().unwrap();
            within(
                "inverse",
                inv.max_abs_diff(&general_inv).unwrap(),
                bound * n_inv.max(general_inv.max_abs()),
            );
            for prod in [e.matmul(&inv).unwrap(), inv.matmul(&e).unwrap()] {
                let err = prod.max_abs_diff(&Matrix::identity(d)).unwrap();
                within(
                    "E E^-1 = I",
                    err,
                    10.0 * d as f64 * U * (n_e * inv.norm1() + n_inv * e.norm1()),
                );
            }
            let ld_bound = 10.0 * d as f64 * U * n_e * inv.norm1();
            within(
                "log det = s",
                (e.log_abs_det().unwrap() - s_exact).abs(),
                ld_bound,
            );
        }
    }
    // Exactly s = 0: x orthogonal to y, exp(x y^T) = I + x y^T (x y^T is nilpotent).
    let (x, y) = ([1.5, 0.0, -2.0], [0.0, 3.0, 0.0]);
    let e = rank_one_exp_dense(&x, &y).unwrap();
    assert_eq!(e, Matrix::outer(&x, &y).add_identity(1.0).unwrap());
    within(
        "s = 0 expm",
        e.max_abs_diff(&Matrix::outer(&x, &y).expm().unwrap())
            .unwrap(),
        4.0 * U,
    );
    assert_eq!(e.log_abs_det().unwrap(), 0.0);
}

#[test]
fn tensor_version_matches_the_dense_closed_form_in_batches() {
    // Per-sample x, y, v [batch, d] (one s per sample, from -30 to 30) against dense mat-vecs.
    let mut rng = StdRng::seed_from_u64(22);
    let d = 7;
    let (mut xs, mut ys, mut vs) = (vec![], vec![], vec![]);
    for s in TARGETS {
        let (x, y) = pair(d, s, &mut rng);
        xs.extend(x);
        ys.extend(y);
        vs.extend(Matrix::random_normal(d, 1, 1.0, &mut rng).data().to_vec());
    }
    let shape = [TARGETS.len() as i64, d as i64];
    let (x, y, v) = (
        Tensor::from_slice(&xs).reshape(shape),
        Tensor::from_slice(&ys).reshape(shape),
        Tensor::from_slice(&vs).reshape(shape),
    );
    let out = rank_one_exp_apply(&x, &y, &v).unwrap();
    let back = rank_one_exp_inverse(&x, &y, &out).unwrap();
    let ld = rank_one_exp_logdet(&x, &y).unwrap();
    for b in 0..TARGETS.len() {
        let (xb, yb, vb) = (
            &xs[b * d..(b + 1) * d],
            &ys[b * d..(b + 1) * d],
            &vs[b * d..(b + 1) * d],
        );
        let e = rank_one_exp_dense(xb, yb).unwrap();
        let want = e.matvec(vb).unwrap();
        let size = e.max_abs() * vb.iter().fold(0.0f64, |m, a| m.max(a.abs()));
        for (i, w) in want.iter().enumerate() {
            within(
                "apply",
                (out.double_value(&[b as i64, i as i64]) - w).abs(),
                10.0 * d as f64 * U * size,
            );
        }
        let inv = rank_one_exp_dense(&xb.iter().map(|a| -a).collect::<Vec<_>>(), yb).unwrap();
        let round_trip = (0..d)
            .map(|i| (back.double_value(&[b as i64, i as i64]) - vb[i]).abs())
            .fold(0.0, f64::max);
        within(
            "round trip",
            round_trip,
            10.0 * d as f64 * U * e.norm1() * inv.norm1(),
        );
        within(
            "logdet",
            (ld.double_value(&[b as i64]) - dot(xb, yb)).abs(),
            4.0 * d as f64 * U * size,
        );
    }
    // One x, y broadcast over a batch of images' positions [batch, H, W, d].
    let (x1, y1) = pair(d, 0.7, &mut rng);
    let v = Tensor::randn([2, 3, 4, d as i64], (Kind::Double, tch::Device::Cpu));
    let out = rank_one_exp_apply(&Tensor::from_slice(&x1), &Tensor::from_slice(&y1), &v).unwrap();
    let dense = rank_one_exp_dense(&x1, &y1).unwrap().to_tensor().unwrap();
    let want = v.matmul(&dense.tr());
    within(
        "broadcast",
        (out - want).abs().max().double_value(&[]),
        100.0 * U,
    );
}

#[test]
fn gradients_match_finite_differences_near_and_away_from_s_zero() {
    // L = <r, exp(x y^T) v> + ln det; central differences with step 1e-6 (error ~1e-10).
    let mut rng = StdRng::seed_from_u64(23);
    let d = 4;
    for s in [0.0, 0.05, 2.0, -8.0] {
        let (x, y) = pair(d, s, &mut rng);
        let v = Matrix::random_normal(d, 1, 1.0, &mut rng).data().to_vec();
        let r = Matrix::random_normal(d, 1, 1.0, &mut rng).data().to_vec();
        let loss = |x: &[f64], y: &[f64]| -> f64 {
            dot(&r, &rank_one_exp_dense(x, y).unwrap().matvec(&v).unwrap()) + dot(x, y)
        };
        let (xt, yt) = (
            Tensor::from_slice(&x).set_requires_grad(true),
            Tensor::from_slice(&y).set_requires_grad(true),
        );
        let out = rank_one_exp_apply(&xt, &yt, &Tensor::from_slice(&v)).unwrap();
        let l = (out * Tensor::from_slice(&r)).sum(Kind::Double)
            + rank_one_exp_logdet(&xt, &yt).unwrap();
        l.backward();
        let h = 1e-6;
        for (which, grad) in [(0, xt.grad()), (1, yt.grad())] {
            for i in 0..d {
                let (mut xp, mut yp, mut xm, mut ym) = (x.clone(), y.clone(), x.clone(), y.clone());
                if which == 0 {
                    xp[i] += h;
                    xm[i] -= h;
                } else {
                    yp[i] += h;
                    ym[i] -= h;
                }
                let fd = (loss(&xp, &yp) - loss(&xm, &ym)) / (2.0 * h);
                within(
                    "gradient",
                    (grad.double_value(&[i as i64]) - fd).abs(),
                    1e-7 * fd.abs().max(1.0),
                );
            }
        }
    }
}

#[test]
fn mismatched_lengths_are_errors() {
    let a = Tensor::zeros([3], (Kind::Double, tch::Device::Cpu));
    let b = Tensor::zeros([4], (Kind::Double, tch::Device::Cpu));
    assert!(matches!(
        rank_one_exp_apply(&a, &b, &a),
        Err(Error::Shape(_))
    ));
    assert!(matches!(rank_one_exp_logdet(&a, &b), Err(Error::Shape(_))));
    assert!(matches!(
        rank_one_exp_dense(&[1.0], &[1.0, 2.0]),
        Err(Error::Shape(_))
    ));
}
