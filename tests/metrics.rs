//! Sample-quality metrics (SPEC section 6, issue 12): Frechet distance, KID, precision/recall, toy
//! modes and reconstruction error, each against references that do not use the code under test:
//! closed forms, hand-worked examples, a cyclic Jacobi eigensolver and Denman-Beavers iteration
//! written here, brute-force loops, and (when Python with numpy and scipy is importable) the script
//! `benches/metrics/frechet_reference.py`.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use genflow::data::toy::ToyDensity;
use genflow::linalg::dense::Matrix;
use genflow::metrics::precision_recall::knn_radii;
use genflow::metrics::{
    eight_gaussians_modes, frechet_distance, frechet_distance_from_stats, kid, label_agreement,
    mmd2_unbiased, precision_recall, precision_recall_k, reconstruction_mse, sqrtm_psd,
    trace_sqrt_product, FeatureStats, KidOptions,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use tch::{Kind, Tensor};

// ---------------------------------------------------------------------------------------------
// helpers

/// `rows x cols` independent standard normal entries, row-major.
fn normals(rows: usize, cols: usize, rng: &mut StdRng) -> Vec<f64> {
    (0..rows * cols)
        .map(|_| rng.sample(StandardNormal))
        .collect()
}

/// An f64 tensor `[rows, cols]` from row-major data.
fn tensor(data: &[f64], rows: usize, cols: usize) -> Tensor {
    Tensor::from_slice(data).reshape([rows as i64, cols as i64])
}

/// The entries of a tensor as f64, row-major.
fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).contiguous().reshape([-1])).expect("f64 values")
}

/// `A B` for row-major square matrices of order `n`.
fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            for j in 0..n {
                c[i * n + j] += aik * b[k * n + j];
            }
        }
    }
    c
}

/// `A^T` of a row-major square matrix.
fn transpose(a: &[f64], n: usize) -> Vec<f64> {
    let mut t = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            t[j * n + i] = a[i * n + j];
        }
    }
    t
}

/// `max |a - b|`.
fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

/// `max |a|`.
fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// A random orthogonal matrix of order `n` (modified Gram-Schmidt on the columns of a Gaussian matrix).
fn random_orthogonal(n: usize, rng: &mut StdRng) -> Vec<f64> {
    let g = normals(n, n, rng);
    let mut cols: Vec<Vec<f64>> = (0..n)
        .map(|j| (0..n).map(|i| g[i * n + j]).collect())
        .collect();
    for j in 0..n {
        let (done, rest) = cols.split_at_mut(j);
        let col = &mut rest[0];
        for q in done.iter() {
            let dot: f64 = col.iter().zip(q).map(|(a, b)| a * b).sum();
            col.iter_mut().zip(q).for_each(|(a, b)| *a -= dot * b);
        }
        let norm = col.iter().map(|v| v * v).sum::<f64>().sqrt();
        col.iter_mut().for_each(|v| *v /= norm);
    }
    let mut q = vec![0.0; n * n];
    for (j, col) in cols.iter().enumerate() {
        for i in 0..n {
            q[i * n + j] = col[i];
        }
    }
    q
}

/// `Q diag(w) Q^T`, exactly symmetrised.
fn from_spectrum(q: &[f64], w: &[f64], n: usize) -> Vec<f64> {
    let mut qw = q.to_vec();
    for i in 0..n {
        for j in 0..n {
            qw[i * n + j] *= w[j];
        }
    }
    let a = matmul(&qw, &transpose(q, n), n);
    let at = transpose(&a, n);
    a.iter().zip(&at).map(|(x, y)| 0.5 * (x + y)).collect()
}

/// Eigenvalues and eigenvectors (columns of the row-major `V`) of a symmetric matrix by the cyclic
/// Jacobi method (Golub & Van Loan, *Matrix Computations*, 4th ed., Algorithm 8.5.3), written here
/// as an eigensolver independent of LAPACK.
fn jacobi_eigh(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0.0; n * n];
    (0..n).for_each(|i| v[i * n + i] = 1.0);
    let total: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|p| (0..n).filter(move |&q| q != p).map(move |q| (p, q)))
            .map(|(p, q)| a[p * n + q].powi(2))
            .sum();
        if off <= 1e-32 * total {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + theta.hypot(1.0));
                let c = 1.0 / t.hypot(1.0);
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

/// `A^{1/2} = V diag(sqrt(max(w, 0))) V^T` by the Jacobi eigensolver above.
fn jacobi_sqrt(a: &[f64], n: usize) -> Vec<f64> {
    let (w, v) = jacobi_eigh(a, n);
    let root: Vec<f64> = w.iter().map(|x| x.max(0.0).sqrt()).collect();
    from_spectrum(&v, &root, n)
}

/// `tr((S1^{1/2} S2 S1^{1/2})^{1/2})` by the Jacobi eigensolver above.
fn jacobi_trace_sqrt_product(s1: &[f64], s2: &[f64], n: usize) -> f64 {
    let r = jacobi_sqrt(s1, n);
    let m = matmul(&matmul(&r, s2, n), &r, n);
    let (lambda, _) = jacobi_eigh(&m, n);
    lambda.iter().map(|x| x.max(0.0).sqrt()).sum()
}

/// The principal square root of a matrix with eigenvalues off the closed negative real axis by the
/// Denman-Beavers iteration `Y <- (Y + Z^{-1}) / 2`, `Z <- (Z + Y^{-1}) / 2` from `Y = A`, `Z = I`
/// (Higham, *Functions of Matrices*, 2008, equation 6.15); inverses by genflow's dense LU.
fn denman_beavers(a: &[f64], n: usize) -> Vec<f64> {
    let mut y = Matrix::from_vec(n, n, a.to_vec()).expect("square");
    let mut z = Matrix::identity(n);
    for _ in 0..100 {
        let y_next = y
            .add(&z.inverse().expect("invertible"))
            .expect("sum")
            .scale(0.5);
        let z_next = z
            .add(&y.inverse().expect("invertible"))
            .expect("sum")
            .scale(0.5);
        let step = y_next.max_abs_diff(&y).expect("same size");
        y = y_next;
        z = z_next;
        if step <= 1e-15 * y.max_abs() {
            break;
        }
    }
    y.data().to_vec()
}

/// A random SPD matrix `Q diag(w) Q^T` with eigenvalues log-spaced on `[1e-4, 1]` (condition number
/// 1e4), with its exact square root `Q diag(sqrt w) Q^T`.
fn random_spd(n: usize, rng: &mut StdRng) -> (Vec<f64>, Vec<f64>) {
    let q = random_orthogonal(n, rng);
    let w: Vec<f64> = (0..n)
        .map(|i| 10f64.powf(-4.0 * i as f64 / (n - 1) as f64))
        .collect();
    let root: Vec<f64> = w.iter().map(|x| x.sqrt()).collect();
    (from_spectrum(&q, &w, n), from_spectrum(&q, &root, n))
}

/// A random PSD matrix of rank `n / 2` (eigenvalues on `[0.01, 1]` and `n - n/2` zeros), with its
/// exact square root.
fn random_psd_half_rank(n: usize, rng: &mut StdRng) -> (Vec<f64>, Vec<f64>) {
    let q = random_orthogonal(n, rng);
    let w: Vec<f64> = (0..n)
        .map(|i| {
            if i < n / 2 {
                0.01 + rng.random::<f64>()
            } else {
                0.0
            }
        })
        .collect();
    let root: Vec<f64> = w.iter().map(|x| x.sqrt()).collect();
    (from_spectrum(&q, &w, n), from_spectrum(&q, &root, n))
}

/// The Python interpreter when it can import numpy and scipy; otherwise `None` after printing why the
/// comparison is skipped.
fn python_with_scipy(what: &str) -> Option<String> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let ok = Command::new(&python)
        .args(["-c", "import numpy, scipy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        Some(python)
    } else {
        println!(
            "note: skipping the scipy comparison of {what}: '{python} -c \"import numpy, scipy\"' \
             failed (pip install numpy scipy to run it)"
        );
        None
    }
}

/// Runs `benches/metrics/frechet_reference.py` with `args` and parses its JSON output.
fn reference_script(python: &str, args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/metrics/frechet_reference.py");
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .expect("run the reference script");
    assert!(
        out.status.success(),
        "frechet_reference.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from the reference script")
}

fn json_f64(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key} in {v}"))
}

// ---------------------------------------------------------------------------------------------
// Frechet distance

#[test]
fn frechet_of_a_set_against_itself_is_zero() {
    let mut rng = StdRng::seed_from_u64(1);
    // full rank (n >> d), mixed so that the covariance is not diagonal; and rank-deficient (n < d)
    for (n, d) in [(2000, 64), (20, 64)] {
        let mixing = normals(d, d, &mut rng);
        let z = tensor(&normals(n, d, &mut rng), n, d);
        let x = z.matmul(&tensor(&mixing, d, d)) + 3.0;
        for features in [x.shallow_clone(), x.to_kind(Kind::Float)] {
            let r = frechet_distance(&features, &features).expect("fd");
            let scale = r.trace_a + r.trace_b;
            println!(
                "FD self, n {n}, d {d}, {:?}: {:e} (trace scale {scale:.3}, relative {:e})",
                features.kind(),
                r.fd,
                r.fd / scale
            );
            assert!(
                r.fd.abs() <= 1e-6 * scale,
                "FD of a set against itself: {r:?}"
            );
            assert_eq!((r.n_a, r.n_b, r.dim), (n, n, d));
            assert_eq!(r.mean_term, 0.0);
        }
    }
}

#[test]
fn frechet_matches_closed_forms_for_exact_gaussian_statistics() {
    let mut rng = StdRng::seed_from_u64(2);
    let d = 12;
    let m1 = normals(1, d, &mut rng);
    let m2 = normals(1, d, &mut rng);
    let a: Vec<f64> = (0..d).map(|_| rng.random::<f64>() * 3.0).collect();
    let b: Vec<f64> = (0..d)
        .map(|i| if i == 0 { 0.0 } else { rng.random::<f64>() })
        .collect();
    let mean_term: f64 = m1.iter().zip(&m2).map(|(x, y)| (x - y).powi(2)).sum();
    // FD = |m1 - m2|^2 + sum (sqrt a_i - sqrt b_i)^2 for covariances diag(a), diag(b), and for
    // Q diag(a) Q^T, Q diag(b) Q^T (commuting) with any orthogonal Q
    let expected = mean_term
        + a.iter()
            .zip(&b)
            .map(|(x, y)| (x.sqrt() - y.sqrt()).powi(2))
            .sum::<f64>();
    let eye: Vec<f64> = (0..d * d).map(|k| f64::from(k % (d + 1) == 0)).collect();
    let q = random_orthogonal(d, &mut rng);
    for (name, basis) in [("diagonal", &eye), ("rotated", &q)] {
        let s1 = tensor(&from_spectrum(basis, &a, d), d, d);
        let s2 = tensor(&from_spectrum(basis, &b, d), d, d);
        let st1 = FeatureStats::new(&Tensor::from_slice(&m1), &s1, 100).expect("stats");
        let st2 = FeatureStats::new(&Tensor::from_slice(&m2), &s2, 50).expect("stats");
        let r = frechet_distance_from_stats(&st1, &st2).expect("fd");
        println!("FD closed form ({name}): {} vs {expected}", r.fd);
        assert!(
            (r.fd - expected).abs() <= 1e-12 * expected,
            "{name}: {r:?} vs {expected}"
        );
        assert!((r.mean_term - mean_term).abs() <= 1e-13 * mean_term);
        assert_eq!((r.n_a, r.n_b, r.dim), (100, 50, d));
    }

    // non-commuting 2x2: M = S1^1/2 S2 S1^1/2 has tr M = tr(S1 S2) and det M = det S1 det S2, and
    // tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)) for 2x2 PSD M (Levinger 1980)
    let cases: [([f64; 4], [f64; 4]); 3] = [
        ([2.0, 0.7, 0.7, 1.0], [0.5, -0.3, -0.3, 3.0]),
        ([1.0, 2.0, 2.0, 4.0], [3.0, 1.0, 1.0, 1.0]), // S1 of rank 1
        ([1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]), // orthogonal supports: tr sqrt = 0
    ];
    for (s1, s2) in cases {
        let tr_prod = s1[0] * s2[0] + s1[1] * s2[2] + s1[2] * s2[1] + s1[3] * s2[3];
        let det = (s1[0] * s1[3] - s1[1] * s1[2]) * (s2[0] * s2[3] - s2[1] * s2[2]);
        let expected = (tr_prod + 2.0 * det.max(0.0).sqrt()).sqrt();
        let got = trace_sqrt_product(&tensor(&s1, 2, 2), &tensor(&s2, 2, 2)).expect("trace");
        println!("2x2 tr sqrt: {got} vs closed form {expected}");
        assert!(
            (got - expected).abs() <= 1e-8 * expected.max(1.0),
            "{s1:?} {s2:?}"
        );
    }
}

#[test]
fn feature_stats_are_the_mean_and_unbiased_covariance() {
    let mut rng = StdRng::seed_from_u64(3);
    let (n, d) = (37, 5);
    let x = normals(n, d, &mut rng);
    let stats = FeatureStats::from_features(&tensor(&x, n, d).to_kind(Kind::Float)).expect("stats");
    // the same from the f32-rounded values, by loops
    let xf: Vec<f64> = x.iter().map(|&v| f64::from(v as f32)).collect();
    let mean: Vec<f64> = (0..d)
        .map(|j| (0..n).map(|i| xf[i * d + j]).sum::<f64>() / n as f64)
        .collect();
    let mut cov = vec![0.0; d * d];
    for i in 0..n {
        for j in 0..d {
            for k in 0..d {
                cov[j * d + k] += (xf[i * d + j] - mean[j]) * (xf[i * d + k] - mean[k]);
            }
        }
    }
    cov.iter_mut().for_each(|c| *c /= (n - 1) as f64);
    assert!(max_abs_diff(&values(stats.mean()), &mean) < 1e-14);
    assert!(max_abs_diff(&values(stats.cov()), &cov) < 1e-14);
    assert_eq!((stats.n(), stats.dim()), (n, d));
    assert_eq!(stats.mean().kind(), Kind::Double);
}

#[test]
fn matrix_square_root_matches_independent_references() {
    let mut rng = StdRng::seed_from_u64(4);
    let n = 40;
    let (spd, spd_root) = random_spd(n, &mut rng);
    let (psd, psd_root) = random_psd_half_rank(n, &mut rng);
    let (spd2, _) = random_spd(n, &mut rng);
    let (psd2, _) = random_psd_half_rank(n, &mut rng);

    for (name, a, exact, tol) in [
        ("SPD, cond 1e4", &spd, &spd_root, 1e-12),
        ("PSD, rank d/2", &psd, &psd_root, 1e-7),
    ] {
        let x = values(&sqrtm_psd(&tensor(a, n, n)).expect("sqrtm"));
        let scale = max_abs(exact);
        let vs_exact = max_abs_diff(&x, exact) / scale;
        let vs_jacobi = max_abs_diff(&x, &jacobi_sqrt(a, n)) / scale;
        let residual = max_abs_diff(&matmul(&x, &x, n), a) / max_abs(a);
        let asym = max_abs_diff(&x, &transpose(&x, n)) / scale;
        let (w, _) = jacobi_eigh(&x, n);
        let min_eig = w.iter().cloned().fold(f64::INFINITY, f64::min);
        println!(
            "sqrtm_psd {name}: |X - exact| {vs_exact:.2e}, |X - Jacobi| {vs_jacobi:.2e}, \
             |X X - A| {residual:.2e}, asymmetry {asym:.2e}, min eig {min_eig:.2e} (relative)"
        );
        assert!(
            vs_exact <= tol && vs_jacobi <= tol && residual <= 1e-12,
            "{name}"
        );
        assert!(asym == 0.0 && min_eig >= -tol * scale, "{name}");
        if name.starts_with("SPD") {
            let db = denman_beavers(a, n);
            let vs_db = max_abs_diff(&x, &db) / scale;
            println!("sqrtm_psd {name}: |X - Denman-Beavers| {vs_db:.2e}");
            assert!(vs_db <= tol, "{name}: Denman-Beavers {vs_db}");
        }
    }

    for (name, s1, s2) in [
        ("SPD, SPD", &spd, &spd2),
        ("PSD, SPD", &psd, &spd2),
        ("SPD, PSD", &spd, &psd2),
        ("PSD, PSD", &psd, &psd2),
    ] {
        let got = trace_sqrt_product(&tensor(s1, n, n), &tensor(s2, n, n)).expect("trace");
        let jacobi = jacobi_trace_sqrt_product(s1, s2, n);
        let rel = (got - jacobi).abs() / jacobi;
        let mut line = format!("tr sqrt({name}): {got:.15} vs Jacobi {jacobi:.15} (rel {rel:.1e})");
        assert!(rel <= 1e-7, "{line}");
        if name == "SPD, SPD" {
            // the principal square root of the non-symmetric product S1 S2 has the same trace
            let db: f64 = denman_beavers(&matmul(s1, s2, n), n)
                .iter()
                .step_by(n + 1)
                .sum();
            let rel_db = (got - db).abs() / db;
            line += &format!(", Denman-Beavers on S1 S2 {db:.15} (rel {rel_db:.1e})");
            assert!(rel_db <= 1e-10, "{line}");
        }
        println!("{line}");
    }
}

#[test]
fn matrix_square_root_matches_scipy() {
    let Some(python) = python_with_scipy("sqrtm") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(5);
    let n = 40;
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, (a, _)) in [
        ("SPD, cond 1e4", random_spd(n, &mut rng)),
        ("PSD, rank d/2", random_psd_half_rank(n, &mut rng)),
    ] {
        let input = dir.path().join("a.npy");
        let output = dir.path().join("x.npy");
        tensor(&a, n, n).write_npy(&input).expect("write npy");
        let info = reference_script(
            &python,
            &[
                "sqrtm",
                input.to_str().expect("utf-8"),
                output.to_str().expect("utf-8"),
            ],
        );
        let scipy = values(&Tensor::read_npy(&output).expect("read npy"));
        let x = values(&sqrtm_psd(&tensor(&a, n, n)).expect("sqrtm"));
        let rel = max_abs_diff(&x, &scipy) / max_abs(&x);
        println!(
            "sqrtm_psd vs scipy.linalg.sqrtm, {name}: max rel diff {rel:.2e} (scipy max imag {:.1e}, \
             residual {:.1e})",
            json_f64(&info, "max_imag"),
            json_f64(&info, "residual")
        );
        assert!(rel <= 1e-6, "{name}: {rel}");
    }
}

#[test]
fn frechet_matches_numpy_scipy_script() {
    let Some(python) = python_with_scipy("the Frechet distance") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(6);
    let dir = tempfile::tempdir().expect("temp dir");
    // full rank: 2000 and 1500 samples of d = 64 with different mixings; rank-deficient: 30 and 25
    // samples of d = 64 (covariance ranks 29 and 24)
    for (name, n_a, n_b, d) in [("full rank", 2000, 1500, 64), ("n < d", 30, 25, 64)] {
        let mix_a = tensor(&normals(d, d, &mut rng), d, d) / (d as f64).sqrt();
        let mix_b = tensor(&normals(d, d, &mut rng), d, d) / (d as f64).sqrt();
        let a = tensor(&normals(n_a, d, &mut rng), n_a, d).matmul(&mix_a);
        let b = tensor(&normals(n_b, d, &mut rng), n_b, d).matmul(&mix_b) + 0.3;
        let (pa, pb) = (dir.path().join("a.npy"), dir.path().join("b.npy"));
        a.write_npy(&pa).expect("npy");
        b.write_npy(&pb).expect("npy");
        let reference = reference_script(
            &python,
            &[
                "fd",
                pa.to_str().expect("utf-8"),
                pb.to_str().expect("utf-8"),
            ],
        );
        let r = frechet_distance(&a, &b).expect("fd");
        let (fd_sqrtm, fd_eigh) = (json_f64(&reference, "fd"), json_f64(&reference, "fd_eigh"));
        let rel_sqrtm = (r.fd - fd_sqrtm).abs() / fd_sqrtm.abs();
        let rel_eigh = (r.fd - fd_eigh).abs() / fd_eigh.abs();
        println!(
            "FD {name} (n {n_a}/{n_b}, d {d}): genflow {:.12}, scipy sqrtm {fd_sqrtm:.12} (rel \
             {rel_sqrtm:.1e}, max imag {:.1e}), numpy eigh {fd_eigh:.12} (rel {rel_eigh:.1e})",
            r.fd,
            json_f64(&reference, "max_imag")
        );
        assert_eq!(reference["n_a"].as_u64(), Some(n_a as u64));
        assert!(rel_eigh <= 1e-6, "{name}: symmetric route {rel_eigh}");
        if name == "full rank" {
            // the standard sqrtm(S1 S2) route is reliable when the covariances are well conditioned
            assert!(rel_sqrtm <= 1e-6, "{name}: sqrtm route {rel_sqrtm}");
            for key in ["mean_term", "trace_a", "trace_b"] {
                let ours = match key {
                    "mean_term" => r.mean_term,
                    "trace_a" => r.trace_a,
                    _ => r.trace_b,
                };
                assert!(
                    (ours - json_f64(&reference, key)).abs() <= 1e-10 * ours.abs(),
                    "{key}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// KID

/// The unbiased MMD^2 with the cubic kernel by explicit loops over pairs.
fn brute_force_mmd2(x: &[f64], y: &[f64], m: usize, d: usize) -> f64 {
    let k = |a: &[f64], b: &[f64]| -> f64 {
        let dot: f64 = a.iter().zip(b).map(|(p, q)| p * q).sum();
        (dot / d as f64 + 1.0).powi(3)
    };
    let row = |z: &[f64], i: usize| z[i * d..(i + 1) * d].to_vec();
    let (mut kxx, mut kyy, mut kxy) = (0.0, 0.0, 0.0);
    for i in 0..m {
        for j in 0..m {
            if i != j {
                kxx += k(&row(x, i), &row(x, j));
                kyy += k(&row(y, i), &row(y, j));
            }
            kxy += k(&row(x, i), &row(y, j));
        }
    }
    let m = m as f64;
    kxx / (m * (m - 1.0)) + kyy / (m * (m - 1.0)) - 2.0 * kxy / (m * m)
}

#[test]
fn kid_matches_brute_force_mmd() {
    let mut rng = StdRng::seed_from_u64(7);
    let (m, d) = (50, 6);
    let x = normals(m, d, &mut rng);
    let y: Vec<f64> = normals(m, d, &mut rng)
        .iter()
        .map(|v| 1.5 * v + 0.2)
        .collect();
    let expected = brute_force_mmd2(&x, &y, m, d);
    let (tx, ty) = (tensor(&x, m, d), tensor(&y, m, d));
    let full = mmd2_unbiased(&tx, &ty).expect("mmd");
    // subsets of all samples: every subset is the whole set, evaluated once
    let r = kid(&tx, &ty, &KidOptions::default()).expect("kid");
    println!(
        "MMD^2 brute force {expected:.15}, mmd2_unbiased {full:.15}, kid {:.15}",
        r.mean
    );
    assert!((full - expected).abs() <= 1e-12 * expected.abs());
    assert!((r.mean - expected).abs() <= 1e-12 * expected.abs());
    assert_eq!((r.subsets, r.subset_size, r.std), (1, m, 0.0));
    // f32 input is converted, not computed in f32
    let r32 = kid(
        &tx.to_kind(Kind::Float),
        &ty.to_kind(Kind::Float),
        &KidOptions::default(),
    );
    let from_f32 = brute_force_mmd2(
        &x.iter().map(|&v| f64::from(v as f32)).collect::<Vec<_>>(),
        &y.iter().map(|&v| f64::from(v as f32)).collect::<Vec<_>>(),
        m,
        d,
    );
    assert!((r32.expect("kid").mean - from_f32).abs() <= 1e-12 * from_f32.abs());

    // one subset drawn from larger sets equals the brute force on the subset
    let (n, sub) = (120, 30);
    let big_x = normals(n, d, &mut rng);
    let big_y = normals(n, d, &mut rng);
    let options = KidOptions {
        subset_size: sub,
        subsets: 7,
        seed: 11,
    };
    let r = kid(&tensor(&big_x, n, d), &tensor(&big_y, n, d), &options).expect("kid");
    assert_eq!((r.subsets, r.subset_size, r.values.len()), (7, sub, 7));
    let again = kid(&tensor(&big_x, n, d), &tensor(&big_y, n, d), &options).expect("kid");
    assert_eq!(r.values, again.values, "same seed, same subsets");
    let other = KidOptions {
        seed: 12,
        ..options
    };
    let moved = kid(&tensor(&big_x, n, d), &tensor(&big_y, n, d), &other).expect("kid");
    assert_ne!(r.values, moved.values, "another seed draws other subsets");
    let mean = r.values.iter().sum::<f64>() / 7.0;
    let std = (r.values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 7.0).sqrt();
    assert!((r.mean - mean).abs() < 1e-15 && (r.std - std).abs() < 1e-15);
}

#[test]
fn kid_is_unbiased_for_samples_of_one_distribution() {
    let mut rng = StdRng::seed_from_u64(8);
    let d = 8;
    // a bounded, correlated, non-Gaussian distribution: sigmoid of correlated normals
    let mix = normals(d, d, &mut rng);
    let sample = |n: usize, rng: &mut StdRng| {
        (tensor(&normals(n, d, rng), n, d).matmul(&tensor(&mix, d, d)) * (2.0 / (d as f64).sqrt()))
            .sigmoid()
    };

    // (1) independent replicates: fresh pairs of samples, the whole pair as one subset
    let (reps, m) = (1000, 50);
    let mut unbiased = Vec::with_capacity(reps);
    let mut biased = Vec::with_capacity(reps);
    for _ in 0..reps {
        let (x, y) = (sample(m, &mut rng), sample(m, &mut rng));
        let options = KidOptions {
            subset_size: m,
            subsets: 1,
            seed: 0,
        };
        unbiased.push(kid(&x, &y, &options).expect("kid").mean);
        // the biased V-statistic (diagonal kernel terms included), computed independently
        let k = |a: &Tensor, b: &Tensor| (a.matmul(&b.tr()) / d as f64 + 1.0).pow_tensor_scalar(3);
        let v = k(&x, &x).mean(Kind::Double) + k(&y, &y).mean(Kind::Double)
            - k(&x, &y).mean(Kind::Double) * 2.0;
        biased.push(v.double_value(&[]));
    }
    let mean_se = |v: &[f64]| {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
        (mean, (var / v.len() as f64).sqrt())
    };
    let (mu, se) = mean_se(&unbiased);
    let (mu_b, se_b) = mean_se(&biased);
    println!(
        "KID unbiasedness, {reps} independent pairs of m = {m}: mean {mu:.3e} +- {se:.3e} (SE), \
         {:.2} SE from 0; the biased V-statistic: {mu_b:.3e} +- {se_b:.3e} ({:.1} SE from 0)",
        mu / se,
        mu_b / se_b
    );
    assert!(
        mu.abs() <= 3.0 * se,
        "unbiased MMD^2 mean {mu} is more than 3 SE {se} from 0"
    );
    assert!(
        mu_b > 3.0 * se_b,
        "the test should detect the bias of the V-statistic"
    );
    assert!(
        unbiased.iter().any(|&v| v < 0.0),
        "unbiased values are never clipped"
    );

    // (2) many subsets of one large pair of samples
    let (x, y) = (sample(4000, &mut rng), sample(4000, &mut rng));
    let options = KidOptions {
        subset_size: 100,
        subsets: 500,
        seed: 3,
    };
    let r = kid(&x, &y, &options).expect("kid");
    let se = r.std / (r.subsets as f64).sqrt();
    println!(
        "KID over {} subsets of m = {} from 4000 + 4000 samples of one distribution: mean {:.3e}, \
         std {:.3e}, SE {se:.3e} ({:.2} SE from 0)",
        r.subsets,
        r.subset_size,
        r.mean,
        r.std,
        r.mean / se
    );
    assert!(r.mean.abs() <= 3.0 * se);

    // a clearly different distribution: positive and far larger
    let shifted = sample(4000, &mut rng) * 1.3;
    let far = kid(&x, &shifted, &options).expect("kid");
    println!(
        "KID against the same distribution scaled by 1.3: {:.4e} +- {:.1e}",
        far.mean, far.std
    );
    assert!(far.mean > 0.0 && far.mean > 20.0 * se && far.mean > 10.0 * r.mean.abs());
}

// ---------------------------------------------------------------------------------------------
// monotonicity on image-like data

const SIDE: i64 = 28;

/// `n` synthetic 28x28 images `[n, 1, 28, 28]` (f64, values in [0, 1]): three random quadratic Bezier
/// strokes each, drawn with a Gaussian pen of width 1 pixel.
fn stroke_images(n: usize, rng: &mut StdRng) -> Tensor {
    const STROKES: usize = 3;
    const STEPS: usize = 16;
    let mut points = Vec::with_capacity(n * STROKES * STEPS * 2);
    for _ in 0..n * STROKES {
        let p: Vec<f64> = (0..6).map(|_| 4.0 + 20.0 * rng.random::<f64>()).collect();
        for s in 0..STEPS {
            let t = s as f64 / (STEPS - 1) as f64;
            let (a, b, c) = ((1.0 - t).powi(2), 2.0 * (1.0 - t) * t, t * t);
            points.push(a * p[0] + b * p[2] + c * p[4]);
            points.push(a * p[1] + b * p[3] + c * p[5]);
        }
    }
    let pts = Tensor::from_slice(&points).reshape([n as i64, (STROKES * STEPS) as i64, 1, 2]);
    let coords = Tensor::arange(SIDE, (Kind::Double, tch::Device::Cpu));
    let grid = Tensor::stack(
        &[
            coords.unsqueeze(1).expand([SIDE, SIDE], false),
            coords.unsqueeze(0).expand([SIDE, SIDE], false),
        ],
        -1,
    )
    .reshape([1, 1, SIDE * SIDE, 2]);
    // 100 images at a time keeps the [100, 48, 784, 2] differences at 60 MB
    let ink: Vec<Tensor> = pts
        .split(100, 0)
        .iter()
        .map(|chunk| {
            let d2 =
                (chunk - &grid)
                    .square()
                    .sum_dim_intlist([-1i64].as_slice(), false, Kind::Double);
            (d2 * -0.5).exp().amax([1i64].as_slice(), false)
        })
        .collect();
    Tensor::cat(&ink, 0).reshape([n as i64, 1, SIDE, SIDE])
}

/// A Gaussian blur of standard deviation `sigma` pixels (separable, zero padding, same size).
fn blur(images: &Tensor, sigma: f64) -> Tensor {
    let radius = (3.0 * sigma).ceil() as i64;
    let taps: Vec<f64> = (-radius..=radius)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f64 = taps.iter().sum();
    let kernel = Tensor::from_slice(&taps.iter().map(|t| t / total).collect::<Vec<_>>());
    let len = 2 * radius + 1;
    let rows = images.conv2d(
        &kernel.reshape([1, 1, len, 1]),
        None::<Tensor>,
        [1, 1],
        [radius, 0],
        [1, 1],
        1,
    );
    rows.conv2d(
        &kernel.reshape([1, 1, 1, len]),
        None::<Tensor>,
        [1, 1],
        [0, radius],
        [1, 1],
        1,
    )
}

/// A fixed deterministic feature map of 28x28 images: 4x4 average pooling (49 features) and a fixed
/// random projection of the pixels through tanh (64 features).
struct FeatureMap {
    projection: Tensor,
    bias: Tensor,
}

impl FeatureMap {
    fn new(rng: &mut StdRng) -> Self {
        let pixels = (SIDE * SIDE) as usize;
        FeatureMap {
            projection: tensor(&normals(pixels, 64, rng), pixels, 64)
                * (3.0 / (pixels as f64).sqrt()),
            bias: Tensor::from_slice(&normals(1, 64, rng)),
        }
    }

    fn features(&self, images: &Tensor) -> Tensor {
        let n = images.size()[0];
        let pooled = images
            .avg_pool2d([4, 4], [4, 4], [0, 0], false, true, None::<i64>)
            .reshape([n, -1]);
        let projected = (images.reshape([n, -1]).matmul(&self.projection) + &self.bias).tanh();
        Tensor::cat(&[pooled, projected], 1)
    }
}

#[test]
fn fd_and_kid_grow_with_noise_and_blur() {
    let start = Instant::now();
    let mut rng = StdRng::seed_from_u64(9);
    let n = 2000;
    let map = FeatureMap::new(&mut rng);
    let reference = map.features(&stroke_images(n, &mut rng));
    let other = stroke_images(n, &mut rng);
    let kid_options = KidOptions {
        subset_size: 500,
        subsets: 50,
        seed: 5,
    };
    let noise = tensor(
        &normals(n, (SIDE * SIDE) as usize, &mut rng),
        n,
        (SIDE * SIDE) as usize,
    )
    .reshape([n as i64, 1, SIDE, SIDE]);
    let measure = |images: &Tensor| {
        let f = map.features(images);
        let fd = frechet_distance(&reference, &f).expect("fd").fd;
        let k = kid(&reference, &f, &kid_options).expect("kid");
        (fd, k.mean, k.std)
    };
    let clean = measure(&other);
    println!(
        "image-like data, {n} vs {n} images, {} features; FD/KID of two disjoint clean sets: \
         FD {:.5}, KID {:.3e} +- {:.1e}",
        reference.size()[1],
        clean.0,
        clean.1,
        clean.2
    );
    for (distortion, levels) in [
        ("noise std", [0.05, 0.1, 0.2, 0.3, 0.5]),
        ("blur sigma", [0.5, 0.75, 1.0, 1.5, 2.0]),
    ] {
        let mut previous = clean;
        for level in levels {
            let images = if distortion == "noise std" {
                &other + &noise * level
            } else {
                blur(&other, level)
            };
            let now = measure(&images);
            println!(
                "  {distortion} {level:<4}: FD {:10.5}  KID {:.4e} +- {:.1e}",
                now.0, now.1, now.2
            );
            assert!(
                now.0 > previous.0,
                "FD must grow with {distortion}: {} then {}",
                previous.0,
                now.0
            );
            assert!(
                now.1 > previous.1,
                "KID must grow with {distortion}: {} then {}",
                previous.1,
                now.1
            );
            previous = now;
        }
    }
    println!(
        "(monotonicity test: {:.1} s)",
        start.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// precision and recall

/// Precision and recall by brute force: Euclidean distances by explicit loops, radii by sorting.
fn brute_force_precision_recall(
    real: &[f64],
    gen: &[f64],
    n: usize,
    d: usize,
    k: usize,
) -> (f64, f64) {
    let dist = |a: &[f64], i: usize, b: &[f64], j: usize| -> f64 {
        (0..d)
            .map(|c| (a[i * d + c] - b[j * d + c]).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let radii = |x: &[f64]| -> Vec<f64> {
        (0..n)
            .map(|i| {
                let mut others: Vec<f64> = (0..n)
                    .filter(|&j| j != i)
                    .map(|j| dist(x, i, x, j))
                    .collect();
                let (_, kth, _) = others.select_nth_unstable_by(k - 1, f64::total_cmp);
                *kth
            })
            .collect()
    };
    let (rr, rg) = (radii(real), radii(gen));
    let inside = |q: &[f64], c: &[f64], r: &[f64]| -> usize {
        (0..n)
            .filter(|&i| (0..n).any(|j| dist(q, i, c, j) <= r[j]))
            .count()
    };
    (
        inside(gen, real, &rr) as f64 / n as f64,
        inside(real, gen, &rg) as f64 / n as f64,
    )
}

#[test]
fn precision_recall_of_identical_and_far_apart_sets() {
    let mut rng = StdRng::seed_from_u64(10);
    let (n, d) = (500, 8);
    let x = tensor(&normals(n, d, &mut rng), n, d);
    let same = precision_recall(&x, &x).expect("pr");
    assert_eq!(
        (same.precision, same.recall, same.k, same.n, same.dim),
        (1.0, 1.0, 3, n, d)
    );
    let far = precision_recall(&x, &(&x + 50.0)).expect("pr");
    assert_eq!((far.precision, far.recall), (0.0, 0.0));
}

#[test]
fn precision_recall_of_a_hand_worked_example() {
    // real {0, 1, 2, 3, 4}: distances to the 3rd nearest other point 3, 2, 2, 2, 3, so the real
    // manifold is [-3, 3] u [-1, 3] u [0, 4] u [1, 5] u [1, 7] = [-3, 7].
    // generated {6.4, 10, 11, 12, 13}: radii 5.6, 3, 2, 2, 3, manifold [0.8, 12] u [7, 13] u ... = [0.8, 16].
    // precision: only 6.4 lies in [-3, 7] -> 1/5; recall: 1, 2, 3, 4 lie in [0.8, 16], 0 does not -> 4/5.
    let real = Tensor::from_slice(&[0.0f64, 1.0, 2.0, 3.0, 4.0]).reshape([5, 1]);
    let gen = Tensor::from_slice(&[6.4f64, 10.0, 11.0, 12.0, 13.0]).reshape([5, 1]);
    assert_eq!(
        values(&knn_radii(&real, 3).expect("radii")),
        vec![3.0, 2.0, 2.0, 2.0, 3.0]
    );
    let radii = values(&knn_radii(&gen, 3).expect("radii"));
    assert!(max_abs_diff(&radii, &[5.6, 3.0, 2.0, 2.0, 3.0]) < 1e-12);
    let pr = precision_recall(&real, &gen).expect("pr");
    assert_eq!((pr.precision, pr.recall), (0.2, 0.8));
    // with k = 1 the radii are 1, 1, 1, 1, 1 and 3.6, 1, 1, 1, 1: precision 0, recall 2/5 (3 and 4)
    let pr1 = precision_recall_k(&real, &gen, 1).expect("pr");
    assert_eq!((pr1.precision, pr1.recall), (0.0, 0.4));
}

#[test]
fn precision_recall_matches_brute_force() {
    let mut rng = StdRng::seed_from_u64(11);
    // 300 samples in one block; 2500 samples in several blocks of rows (2^22 distances each)
    for (n, d) in [(300, 5), (2500, 3)] {
        let real = normals(n, d, &mut rng);
        // generated: narrower and shifted, so both numbers are strictly between 0 and 1
        let gen: Vec<f64> = normals(n, d, &mut rng)
            .iter()
            .map(|v| 0.6 * v + 0.5)
            .collect();
        let (p, r) = brute_force_precision_recall(&real, &gen, n, d, 3);
        let ours = precision_recall(
            &tensor(&real, n, d),
            &tensor(&gen, n, d).to_kind(Kind::Double),
        )
        .expect("pr");
        println!(
            "precision/recall n {n}, d {d}: {:.4}/{:.4}, brute force {p:.4}/{r:.4}",
            ours.precision, ours.recall
        );
        assert_eq!((ours.precision, ours.recall), (p, r));
        assert!(p > 0.2 && p < 1.0 && r > 0.05 && r < 0.95, "{p} {r}");
    }
}

// ---------------------------------------------------------------------------------------------
// 8gaussians modes

/// `P(Z > z)` for a standard normal `Z` (libtorch's erfc, not the code under test).
fn normal_tail(z: f64) -> f64 {
    0.5 * Tensor::from_slice(&[z / std::f64::consts::SQRT_2])
        .erfc()
        .double_value(&[0])
}

#[test]
fn true_eight_gaussians_samples_cover_all_modes() {
    let n = 20000;
    let samples = ToyDensity::EightGaussians.sample(n, 21);
    let modes = eight_gaussians_modes(&samples).expect("modes");
    // a 2-D isotropic Gaussian puts 1 - exp(-9/2) of its mass within 3 sigma; a sample can also land
    // within 3 sigma of another mode (centres 2 * 2.8289 * sin(22.5 deg) / sigma = 6.12 sigma apart),
    // at most P(projection towards that mode > distance - 3 sigma) for each other mode
    let sigma = 0.5 / 1.414;
    let radius = 4.0 / 1.414;
    let inside = 1.0 - (-4.5f64).exp();
    let leak: f64 = (1..8)
        .map(|j| {
            let gap = 2.0 * radius * (std::f64::consts::PI * j as f64 / 8.0).sin() / sigma;
            normal_tail(gap - 3.0)
        })
        .sum();
    let se = (inside * (1.0 - inside) / n as f64).sqrt();
    println!(
        "8gaussians, {n} true samples: modes {}, high-quality {:.5} (1 - exp(-9/2) = {inside:.5}, \
         leak bound {leak:.5}, SE {se:.5}), per mode {:?}",
        modes.modes_covered, modes.high_quality_fraction, modes.high_quality_counts
    );
    assert_eq!(modes.modes_covered, 8);
    assert_eq!(modes.n, n);
    assert!(modes.high_quality_fraction >= inside - 3.0 * se);
    assert!(modes.high_quality_fraction <= inside + leak + 3.0 * se);
    assert_eq!(modes.nearest_counts.iter().sum::<usize>(), n);
    for &c in &modes.nearest_counts {
        // each mode holds n/8 samples, binomial SD sqrt(n/8 * 7/8) = 47
        assert!(
            (c as f64 - n as f64 / 8.0).abs() < 5.0 * 47.0,
            "{:?}",
            modes.nearest_counts
        );
    }
}

#[test]
fn samples_from_three_modes_cover_three() {
    let mut rng = StdRng::seed_from_u64(12);
    let sigma = 0.5 / 1.414;
    // the means of 8gaussians at 0, 90 and 45 degrees (SPEC section 7), radius 4 / 1.414
    let radius = 4.0 / 1.414;
    let picked = [0.0f64, 90.0, 45.0].map(|deg| {
        let a = deg.to_radians();
        [radius * a.cos(), radius * a.sin()]
    });
    let n = 3000;
    let mut points = Vec::with_capacity(2 * n);
    for i in 0..n {
        let c = picked[i % 3];
        points.push(c[0] + sigma * rng.sample::<f64, _>(StandardNormal));
        points.push(c[1] + sigma * rng.sample::<f64, _>(StandardNormal));
    }
    let modes = eight_gaussians_modes(&tensor(&points, n, 2).to_kind(Kind::Float)).expect("modes");
    println!("3 modes: {modes:?}");
    assert_eq!(modes.modes_covered, 3);
    // in the reference order 0, 180, 90, 270, 45, ... degrees: modes 0, 2 and 4
    for k in [1, 3, 5, 6, 7] {
        assert_eq!(modes.high_quality_counts[k], 0);
    }
    assert!(modes.high_quality_counts[0] > 900 && modes.high_quality_counts[2] > 900);

    // the 1% threshold: 10 of 1000 samples cover a mode, 9 do not
    for (few, covered) in [(10, 3), (9, 2)] {
        let mut pts = Vec::new();
        let mut push =
            |p: [f64; 2], count: usize| (0..count).for_each(|_| pts.extend_from_slice(&p));
        push(picked[0], 500);
        push(picked[1], 1000 - 500 - few - 1);
        push(picked[2], few);
        push([100.0, 0.0], 1); // far out: nearest to the 0-degree mode, not high quality
        let modes = eight_gaussians_modes(&tensor(&pts, 1000, 2)).expect("modes");
        assert_eq!(modes.modes_covered, covered, "{few} samples of a mode");
        assert_eq!(modes.high_quality_fraction, 0.999);
        assert_eq!(modes.nearest_counts[0], 501);
    }
}

// ---------------------------------------------------------------------------------------------
// reconstruction

#[test]
fn reconstruction_mse_and_label_agreement() {
    let mut rng = StdRng::seed_from_u64(13);
    let x = normals(6, 12, &mut rng);
    let y = normals(6, 12, &mut rng);
    let r = reconstruction_mse(
        &tensor(&x, 6, 12).reshape([6, 3, 2, 2]),
        &tensor(&y, 6, 12).reshape([6, 3, 2, 2]).to_kind(Kind::Float),
    )
    .expect("mse");
    let expected: Vec<f64> = (0..6)
        .map(|i| {
            (0..12)
                .map(|j| (x[i * 12 + j] - f64::from(y[i * 12 + j] as f32)).powi(2))
                .sum::<f64>()
                / 12.0
        })
        .collect();
    assert!(max_abs_diff(&r.per_item, &expected) < 1e-14);
    assert!((r.mean - expected.iter().sum::<f64>() / 6.0).abs() < 1e-14);
    assert_eq!(r.n, 6);
    let a = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    let b = Tensor::from_slice(&[0i32, 1, 2, 3, 4, 5, 6, 0, 0, 0]);
    assert_eq!(label_agreement(&a, &b).expect("agreement"), 0.7);
}

// ---------------------------------------------------------------------------------------------
// bad input

fn message<T: std::fmt::Debug>(r: genflow::Result<T>) -> String {
    r.expect_err("bad input must be an error").to_string()
}

#[test]
fn bad_input_gives_clear_errors() {
    let good = Tensor::ones([10, 4], (Kind::Float, tch::Device::Cpu)).cumsum(0, Kind::Float);
    let other_dim = Tensor::ones([10, 5], (Kind::Float, tch::Device::Cpu));
    let one_row = Tensor::ones([1, 4], (Kind::Float, tch::Device::Cpu));
    let flat = Tensor::ones([10], (Kind::Float, tch::Device::Cpu));
    let with_nan = good.copy();
    let _ = with_nan.get(3).get(2).fill_(f64::NAN);
    let ints = Tensor::ones([10, 4], (Kind::Int64, tch::Device::Cpu));

    let m = message(frechet_distance(&good, &other_dim));
    assert!(
        m.contains("frechet distance: feature dimensions differ (4 against 5)"),
        "{m}"
    );
    let m = message(frechet_distance(&good, &one_row));
    assert!(
        m.contains("features_b has 1 sample(s), needs at least 2"),
        "{m}"
    );
    let m = message(frechet_distance(&with_nan, &good));
    assert!(
        m.contains("features_a has 1 NaN or infinite value(s), first in row 3"),
        "{m}"
    );
    let m = message(frechet_distance(&flat, &good));
    assert!(
        m.contains("must be a 2-D feature tensor [n, d], got shape [10]"),
        "{m}"
    );
    let m = message(frechet_distance(&ints, &good));
    assert!(
        m.contains("must be a float tensor (f32 or f64), got Int64"),
        "{m}"
    );
    let m = message(FeatureStats::new(
        &Tensor::zeros([2], (Kind::Double, tch::Device::Cpu)),
        &tensor(&[1.0, 2.0, 0.0, 1.0], 2, 2),
        10,
    ));
    assert!(m.contains("the covariance is not symmetric"), "{m}");
    let m = message(FeatureStats::new(
        &Tensor::zeros([2], (Kind::Double, tch::Device::Cpu)),
        &tensor(&[1.0, 2.0, 2.0, 1.0], 2, 2),
        10,
    ));
    assert!(
        m.contains("the covariance is not positive semidefinite (smallest eigenvalue -"),
        "{m}"
    );
    let m = message(FeatureStats::new(
        &Tensor::zeros([3], (Kind::Double, tch::Device::Cpu)),
        &tensor(&[1.0, 0.0, 0.0, 1.0], 2, 2),
        10,
    ));
    assert!(
        m.contains("a mean of 3 features needs a covariance of shape [3, 3], got [2, 2]"),
        "{m}"
    );
    let m = message(sqrtm_psd(&other_dim));
    assert!(m.contains("must be a square matrix [d, d]"), "{m}");

    let m = message(kid(&good, &other_dim, &KidOptions::default()));
    assert!(
        m.contains("KID: feature dimensions differ (4 against 5)"),
        "{m}"
    );
    let m = message(kid(&good, &one_row, &KidOptions::default()));
    assert!(m.contains("KID: subsets of m = 1 sample(s)"), "{m}");
    let m = message(kid(&good, &with_nan, &KidOptions::default()));
    assert!(
        m.contains("KID: features_b has 1 NaN or infinite value(s), first in row 3"),
        "{m}"
    );
    let zero = KidOptions {
        subsets: 0,
        ..KidOptions::default()
    };
    let m = message(kid(&good, &good, &zero));
    assert!(m.contains("subsets = 0"), "{m}");

    let m = message(precision_recall(&good, &good.narrow(0, 0, 9)));
    assert!(
        m.contains("the sets differ in size (10 real, 9 generated)"),
        "{m}"
    );
    let m = message(precision_recall(&good, &other_dim));
    assert!(
        m.contains("feature dimensions differ (4 real, 5 generated)"),
        "{m}"
    );
    let m = message(precision_recall(
        &good.narrow(0, 0, 3),
        &good.narrow(0, 0, 3),
    ));
    assert!(m.contains("real has 3 sample(s), needs at least 4"), "{m}");
    let m = message(precision_recall(&good, &with_nan));
    assert!(
        m.contains("generated has 1 NaN or infinite value(s)"),
        "{m}"
    );
    let m = message(precision_recall_k(&good, &good, 0));
    assert!(m.contains("k = 0 neighbours"), "{m}");

    let m = message(eight_gaussians_modes(&good));
    assert!(
        m.contains("samples must be 2-D points of shape [n, 2], got [10, 4]"),
        "{m}"
    );
    let m = message(eight_gaussians_modes(&with_nan.narrow(1, 2, 2)));
    assert!(
        m.contains("8gaussians modes: samples has 1 NaN or infinite value(s), first in row 3"),
        "{m}"
    );

    let m = message(reconstruction_mse(&good, &other_dim));
    assert!(
        m.contains("x has shape [10, 4] but x_hat has [10, 5]"),
        "{m}"
    );
    let m = message(reconstruction_mse(&good, &with_nan));
    assert!(
        m.contains("x_hat has 1 NaN or infinite value(s), first in row 3"),
        "{m}"
    );
    let labels = Tensor::from_slice(&[1i64, 2, 3]);
    let m = message(label_agreement(
        &labels,
        &Tensor::from_slice(&[1.0f32, 2.0, 3.0]),
    ));
    assert!(
        m.contains("labels_b must hold integer class indices, got Float"),
        "{m}"
    );
    let m = message(label_agreement(&labels, &Tensor::from_slice(&[1i64, 2])));
    assert!(m.contains("3 labels against 2"), "{m}");
}
