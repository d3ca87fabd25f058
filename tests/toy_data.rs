//! The 2-D toy densities against their definitions (SPEC section 7): published NLLs, exact
//! densities checked by quadrature and by an independent formula, and moments computed from the
//! generators' definitions.

use std::f64::consts::{FRAC_1_SQRT_2, PI};

use genflow::data::toy::ToyDensity;
use genflow::tch::{Device, Kind, Tensor};

/// The samples as rows `[x, y]`.
fn rows(t: &Tensor) -> Vec<[f64; 2]> {
    let flat = Vec::<f64>::try_from(&t.reshape([-1])).unwrap();
    flat.chunks_exact(2).map(|p| [p[0], p[1]]).collect()
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    sum / n as f64
}

/// Mean negative log-likelihood of `n` samples under the exact density.
fn monte_carlo_nll(density: ToyDensity, n: usize, seed: u64) -> f64 {
    let x = density.sample(n, seed);
    let log_p = density.log_density(&x).unwrap().unwrap();
    -log_p.mean(Kind::Double).double_value(&[])
}

#[test]
fn eight_gaussians_monte_carlo_nll_matches_published_value() {
    let nll = monte_carlo_nll(ToyDensity::EightGaussians, 1_000_000, 0);
    // SPEC: 2.8324 +- 0.0010 (one Monte-Carlo standard error with 1e6 samples); 3 standard errors.
    assert!((nll - 2.8324).abs() < 0.003, "8gaussians NLL {nll}");
    // The true value (quadrature 2.8319) within 3 standard errors as well.
    assert!((nll - 2.8319).abs() < 0.003, "8gaussians NLL {nll}");
}

#[test]
fn checkerboard_nll_is_ln_32_exactly() {
    let x = ToyDensity::Checkerboard.sample(1_000_000, 0);
    let log_p =
        Vec::<f64>::try_from(&ToyDensity::Checkerboard.log_density(&x).unwrap().unwrap()).unwrap();
    // Every sample lies in the support, where the density is exactly 1/32.
    assert!(log_p.iter().all(|&v| v == -(32f64.ln())));
    let nll = monte_carlo_nll(ToyDensity::Checkerboard, 1_000_000, 1);
    assert!((nll - 3.46574).abs() < 1e-5, "checkerboard NLL {nll}");
}

#[test]
fn eight_gaussians_density_integrates_to_one_with_published_entropy() {
    // Midpoint rule on [-6, 6]^2, h = 0.01: the components (sigma 0.354, centres at radius 2.83)
    // lie 9 sigma inside the box and h << sigma, so the rule is exact to ~1e-12.
    let h = 0.01;
    let centres = Tensor::arange(1200, (Kind::Double, Device::Cpu)) * h + (-6.0 + h / 2.0);
    let grid = Tensor::stack(&Tensor::meshgrid_indexing(&[&centres, &centres], "ij"), -1);
    let log_p = ToyDensity::EightGaussians
        .log_density(&grid)
        .unwrap()
        .unwrap();
    assert_eq!(log_p.size(), vec![1200, 1200]);
    let p = log_p.exp();
    let integral = p.sum(Kind::Double).double_value(&[]) * h * h;
    let entropy = -(&p * &log_p).sum(Kind::Double).double_value(&[]) * h * h;
    assert!((integral - 1.0).abs() < 1e-9, "integral {integral}");
    // SPEC: quadrature 2.8319 (4 decimals).
    assert!((entropy - 2.8319).abs() < 5e-5, "entropy {entropy}");
}

#[test]
fn eight_gaussians_log_density_matches_independent_formula() {
    let s = 1.414;
    let sigma: f64 = 0.5 / s;
    let d = 4.0 * FRAC_1_SQRT_2;
    let centres = [
        [4.0, 0.0],
        [-4.0, 0.0],
        [0.0, 4.0],
        [0.0, -4.0],
        [d, d],
        [d, -d],
        [-d, d],
        [-d, -d],
    ];
    let density = |x: [f64; 2]| -> f64 {
        let sum: f64 = centres
            .iter()
            .map(|c| {
                let r2 = (x[0] - c[0] / s).powi(2) + (x[1] - c[1] / s).powi(2);
                (-r2 / (2.0 * sigma * sigma)).exp() / (2.0 * PI * sigma * sigma)
            })
            .sum();
        (sum / 8.0).ln()
    };
    let points = [[0.0, 0.0], [2.8, 0.1], [-2.0, 2.0], [1.0, -1.5], [0.3, 3.1]];
    let flat: Vec<f64> = points.iter().flatten().copied().collect();
    // f32 input is accepted (computed in f64); compare with the f64 input at f32 precision of x.
    let x64 = Tensor::from_slice(&flat).reshape([5, 2]);
    let got = Vec::<f64>::try_from(
        &ToyDensity::EightGaussians
            .log_density(&x64)
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    for (p, g) in points.iter().zip(&got) {
        assert!(
            (density(*p) - g).abs() < 1e-10 * (1.0 + g.abs()),
            "{p:?}: {g} vs {}",
            density(*p)
        );
    }
    let x32 = x64.to_kind(Kind::Float).reshape([5, 1, 2]);
    let got32 = ToyDensity::EightGaussians
        .log_density(&x32)
        .unwrap()
        .unwrap();
    assert_eq!(got32.kind(), Kind::Double);
    assert_eq!(got32.size(), vec![5, 1]);
    // x rounded to f32 moves it by ~1e-7, changing log p by at most |grad| * 1e-7 (|grad| < 100 here).
    assert!(got32
        .reshape([5])
        .allclose(&Tensor::from_slice(&got), 0.0, 1e-4, false));
}

/// Checkerboard cell `(i, j) = floor(x / 2)` of a point, and whether it belongs to the support.
fn checkerboard_cell(p: [f64; 2]) -> ((i64, i64), bool) {
    let (i, j) = ((p[0] / 2.0).floor() as i64, (p[1] / 2.0).floor() as i64);
    (
        (i, j),
        (-2..=1).contains(&i) && (-2..=1).contains(&j) && (i + j).rem_euclid(2) == 0,
    )
}

#[test]
fn checkerboard_samples_fill_the_eight_cells_uniformly() {
    let n = 400_000;
    let samples = rows(&ToyDensity::Checkerboard.sample(n, 5));
    let mut counts = std::collections::BTreeMap::new();
    for p in &samples {
        let (cell, inside) = checkerboard_cell(*p);
        assert!(inside, "sample {p:?} outside the support");
        *counts.entry(cell).or_insert(0usize) += 1;
    }
    assert_eq!(counts.len(), 8);
    // Binomial(n, 1/8): standard deviation sqrt(n * 1/8 * 7/8) = 209; allow 5 of them.
    for (cell, count) in counts {
        assert!(
            (count as f64 - n as f64 / 8.0).abs() < 5.0 * 209.0,
            "cell {cell:?}: {count}"
        );
    }
    // Uniform inside a cell of side 2: the offset from the cell corner has mean 1 (se 0.0009).
    let offset = mean(samples.iter().map(|p| p[0] - 2.0 * (p[0] / 2.0).floor()));
    assert!((offset - 1.0).abs() < 0.005, "mean offset {offset}");
}

#[test]
fn checkerboard_log_density_on_known_points() {
    // (point, inside?) including cell corners, which belong to the half-open cell above-right.
    let cases = [
        ([-3.0, 1.0], true),
        ([-3.0, -1.0], false),
        ([0.0, 0.0], true),
        ([-4.0, -4.0], true),
        ([3.9, 3.9], true),
        ([4.0, 0.5], false),
        ([1.0, 3.0], false),
        ([-0.5, -0.5], true),
        ([10.0, 10.0], false),
    ];
    let flat: Vec<f32> = cases
        .iter()
        .flat_map(|(p, _)| [p[0] as f32, p[1] as f32])
        .collect();
    let x = Tensor::from_slice(&flat).reshape([cases.len() as i64, 2]);
    let log_p =
        Vec::<f64>::try_from(&ToyDensity::Checkerboard.log_density(&x).unwrap().unwrap()).unwrap();
    for ((p, inside), lp) in cases.iter().zip(log_p) {
        let expected = if *inside {
            -(32f64.ln())
        } else {
            f64::NEG_INFINITY
        };
        assert_eq!(lp, expected, "{p:?}");
        assert_eq!(checkerboard_cell(*p).1, *inside, "test table at {p:?}");
    }
}

#[test]
fn eight_gaussians_moments_match_definition() {
    let samples = rows(&ToyDensity::EightGaussians.sample(200_000, 2));
    // E[x] = 0; E[x1^2] = (16 * mean(cos^2) + 0.25) / 1.414^2 = 8.25 / 1.999396 over the 8 centres.
    let expected = 8.25 / (1.414f64 * 1.414);
    for axis in 0..2 {
        let m = mean(samples.iter().map(|p| p[axis]));
        let m2 = mean(samples.iter().map(|p| p[axis] * p[axis]));
        // Standard errors: sqrt(4.13 / 2e5) = 0.0045 for the mean, about 0.005 for the square.
        assert!(m.abs() < 0.025, "axis {axis} mean {m}");
        assert!(
            (m2 - expected).abs() < 0.03,
            "axis {axis} E[x^2] {m2} vs {expected}"
        );
    }
}

#[test]
fn moons_moments_match_definition() {
    let n = 100_000;
    let samples = rows(&ToyDensity::Moons.sample(n, 3));
    // The noise-free points straight from the definition: n/2 on each moon, t on [0, pi] with ends.
    let half = n / 2;
    let t = |i: usize| PI * i as f64 / (half - 1) as f64;
    let clean: Vec<[f64; 2]> = (0..half)
        .map(|i| [t(i).cos(), t(i).sin()])
        .chain((0..half).map(|i| [1.0 - t(i).cos(), 0.5 - t(i).sin()]))
        .map(|p| [2.0 * p[0] - 1.0, 2.0 * p[1] - 0.2])
        .collect();
    for axis in 0..2 {
        let expected_mean = mean(clean.iter().map(|p| p[axis]));
        // The noise N(0, 0.1^2) becomes N(0, 0.2^2) after the factor 2.
        let expected_m2 = mean(clean.iter().map(|p| p[axis] * p[axis])) + 0.04;
        let m = mean(samples.iter().map(|p| p[axis]));
        let m2 = mean(samples.iter().map(|p| p[axis] * p[axis]));
        // Only the noise is random: standard errors 0.0006 (mean) and < 0.002 (square).
        assert!(
            (m - expected_mean).abs() < 0.004,
            "axis {axis}: mean {m} vs {expected_mean}"
        );
        assert!(
            (m2 - expected_m2).abs() < 0.01,
            "axis {axis}: E[x^2] {m2} vs {expected_m2}"
        );
    }
    // By symmetry of t on [0, pi]: mean (0, 2 * 0.25 - 0.2) = (0, 0.3).
    assert!(mean(clean.iter().map(|p| p[0])).abs() < 1e-12);
    assert!((mean(clean.iter().map(|p| p[1])) - 0.3).abs() < 1e-12);
}

#[test]
fn two_spirals_moments_match_definition() {
    let n = 1_000_000;
    let samples = rows(&ToyDensity::TwoSpirals.sample(n, 4));
    // d and -d cancel: the mean is that of the noise 0.1 N (se 0.0001).
    for axis in 0..2 {
        let m = mean(samples.iter().map(|p| p[axis]));
        assert!(m.abs() < 0.0006, "axis {axis} mean {m}");
    }
    // Second moments from the definition, d = (-t cos t + 0.5 U1, t sin t + 0.5 U2), t = 3 pi sqrt(U):
    // E[d1^2] = E[t^2 cos^2 t] - 0.5 E[t cos t] + 1/12, E[d2^2] = E[t^2 sin^2 t] + 0.5 E[t sin t] + 1/12,
    // E[d1 d2] = -E[t^2 sin t cos t] - 0.25 E[t cos t] + 0.25 E[t sin t] + 1/16; x = +-d / 3 + 0.1 N.
    // The expectations over t by the midpoint rule in U (error far below 1e-6).
    let m = 200_000;
    let e_t = |g: &dyn Fn(f64) -> f64| {
        (0..m)
            .map(|i| g(3.0 * PI * ((i as f64 + 0.5) / m as f64).sqrt()))
            .sum::<f64>()
            / m as f64
    };
    let (tcos, tsin) = (e_t(&|t| t * t.cos()), e_t(&|t| t * t.sin()));
    let e_d11 = e_t(&|t| (t * t.cos()).powi(2)) - 0.5 * tcos + 1.0 / 12.0;
    let e_d22 = e_t(&|t| (t * t.sin()).powi(2)) + 0.5 * tsin + 1.0 / 12.0;
    let e_d12 = -e_t(&|t| t * t * t.sin() * t.cos()) - 0.25 * tcos + 0.25 * tsin + 1.0 / 16.0;
    // Closed forms as a check on the quadrature: t has density 2t / (3 pi)^2 on [0, 3 pi], so
    // E[t cos t] = -4 / (3 pi), E[t sin t] = 2 (9 pi^2 - 4) / (9 pi^2), E[t^2] = 4.5 pi^2.
    assert!(
        (tcos + 4.0 / (3.0 * PI)).abs() < 1e-6
            && (tsin - 2.0 * (9.0 * PI * PI - 4.0) / (9.0 * PI * PI)).abs() < 1e-6
    );
    let e_norm = 4.5 * PI * PI + 0.5 * (tsin - tcos) + 1.0 / 6.0;
    assert!(
        (e_d11 + e_d22 - e_norm).abs() < 1e-6,
        "quadrature {} vs closed form {e_norm}",
        e_d11 + e_d22
    );
    let moments = [
        (
            "E[x1^2]",
            e_d11 / 9.0 + 0.01,
            mean(samples.iter().map(|p| p[0] * p[0])),
        ),
        (
            "E[x2^2]",
            e_d22 / 9.0 + 0.01,
            mean(samples.iter().map(|p| p[1] * p[1])),
        ),
        (
            "E[x1 x2]",
            e_d12 / 9.0,
            mean(samples.iter().map(|p| p[0] * p[1])),
        ),
    ];
    for (name, expected, got) in moments {
        // The squares have standard deviation about 3: standard error 0.003; allow 4 of them.
        assert!(
            (got - expected).abs() < 0.012,
            "{name}: {got} vs {expected}"
        );
    }
}

#[test]
fn pinwheel_has_five_arms() {
    let n = 100_000;
    let samples = rows(&ToyDensity::Pinwheel.sample(n, 6));
    // Five arms at 72-degree steps: the circular moments E[exp(i k phi)] vanish for k = 1..4 and
    // for k = 5 equal E[exp(i (5 atan2(s, r) - 1.25 exp(r)))], r = 1 + 0.3 N, s = 0.1 N (the arm
    // index drops out), computed here by a midpoint rule over the two normals.
    let moment = |k: f64| {
        let (c, s) = samples.iter().fold((0.0, 0.0), |(c, s), p| {
            let phi = p[1].atan2(p[0]);
            (c + (k * phi).cos(), s + (k * phi).sin())
        });
        (c / n as f64, s / n as f64)
    };
    let (h, m) = (0.01, 800);
    let phi = |z: f64| (-0.5 * z * z).exp() / (2.0 * PI).sqrt();
    let mut expected = (0.0, 0.0);
    for i in 0..m {
        for j in 0..m {
            let (a, b) = (-4.0 + (i as f64 + 0.5) * h, -4.0 + (j as f64 + 0.5) * h);
            let r = 1.0 + 0.3 * a;
            let angle = 5.0 * (0.1 * b).atan2(r) - 1.25 * r.exp();
            let w = phi(a) * phi(b) * h * h;
            expected = (expected.0 + w * angle.cos(), expected.1 + w * angle.sin());
        }
    }
    assert!(
        (expected.0 * expected.0 + expected.1 * expected.1).sqrt() > 0.4,
        "expected m5 {expected:?}"
    );
    // Standard error of each moment component <= 1 / sqrt(2n) = 0.0022.
    for k in 1..=4 {
        let (c, s) = moment(k as f64);
        assert!(c.abs() < 0.012 && s.abs() < 0.012, "moment {k}: ({c}, {s})");
    }
    let (c, s) = moment(5.0);
    assert!(
        (c - expected.0).abs() < 0.012 && (s - expected.1).abs() < 0.012,
        "m5 ({c}, {s}) vs {expected:?}"
    );
    // E|x|^2 = 4 E[r^2 + s^2] = 4 (1 + 0.09 + 0.01); |x|^2 has sd about 2.6, se 0.008.
    let m2 = mean(samples.iter().map(|p| p[0] * p[0] + p[1] * p[1]));
    assert!((m2 - 4.4).abs() < 0.04, "E|x|^2 {m2}");
}

#[test]
fn rings_have_four_radii_with_equal_counts() {
    let n = 100_000;
    let samples = rows(&ToyDensity::Rings.sample(n, 7));
    let radii = [3.0, 2.25, 1.5, 0.75];
    let mut sums = [(0usize, 0.0); 4];
    let mut squares = [0.0; 4];
    for p in &samples {
        let r = (p[0] * p[0] + p[1] * p[1]).sqrt();
        let nearest = (0..4)
            .min_by(|&a, &b| (r - radii[a]).abs().total_cmp(&(r - radii[b]).abs()))
            .unwrap();
        sums[nearest] = (sums[nearest].0 + 1, sums[nearest].1 + r);
        squares[nearest] += r * r;
    }
    for (ring, (count, sum)) in sums.iter().enumerate() {
        // A point changes ring only if its noise (sd 0.08) exceeds 0.375 = 4.7 sd: ~1e-6 per point.
        assert!(count.abs_diff(n / 4) <= 5, "ring {ring}: {count} points");
        // |c + 0.08 N_2| has mean R + 0.08^2 / (2R) to first order; se 0.08 / sqrt(25000) = 0.0005.
        let expected = radii[ring] + 0.0064 / (2.0 * radii[ring]);
        let mean_radius = sum / *count as f64;
        assert!(
            (mean_radius - expected).abs() < 0.003,
            "ring {ring}: mean radius {mean_radius} vs {expected}"
        );
        // Spread of the radius: var(|c + e|) = sigma^2 (1 + sigma^2 / (2 R^2)) to second order;
        // the standard error of the sd is 0.08 / sqrt(2 * 25000) = 0.00036; allow 4 of them.
        let sd = (squares[ring] / *count as f64 - mean_radius * mean_radius).sqrt();
        let expected_sd = 0.08 * (1.0 + 0.0064 / (2.0 * radii[ring] * radii[ring])).sqrt();
        assert!(
            (sd - expected_sd).abs() < 0.0015,
            "ring {ring}: radial sd {sd} vs {expected_sd}"
        );
    }
    for axis in 0..2 {
        let m = mean(samples.iter().map(|p| p[axis]));
        assert!(m.abs() < 0.003, "axis {axis} mean {m}");
    }
}

#[test]
fn samples_are_seeded_shaped_and_inside_the_plot_window() {
    for density in ToyDensity::ALL {
        let a = density.sample(1000, 3);
        assert_eq!(a.size(), vec![1000, 2], "{density}");
        assert_eq!(
            (a.kind(), a.device()),
            (Kind::Double, Device::Cpu),
            "{density}"
        );
        assert!(
            a.equal(&density.sample(1000, 3)),
            "{density}: same seed, different samples"
        );
        assert!(
            !a.equal(&density.sample(1000, 4)),
            "{density}: different seeds, same samples"
        );
        for n in [0, 1, 7, 13] {
            assert_eq!(
                density.sample(n, 1).size(),
                vec![n as i64, 2],
                "{density} n = {n}"
            );
        }
        let r = density.plot_range();
        let big = rows(&density.sample(100_000, 9));
        let outside = big
            .iter()
            .filter(|p| p[0].abs() > r || p[1].abs() > r)
            .count();
        assert!(
            outside < 100,
            "{density}: {outside} of 1e5 samples outside [-{r}, {r}]^2"
        );
    }
}

#[test]
fn names_parse_display_and_serialize() {
    let names = [
        "8gaussians",
        "checkerboard",
        "2spirals",
        "2moons",
        "pinwheel",
        "rings",
    ];
    for (density, name) in ToyDensity::ALL.into_iter().zip(names) {
        assert_eq!(density.to_string(), name);
        assert_eq!(name.parse::<ToyDensity>().unwrap(), density);
        let json = serde_json::to_string(&density).unwrap();
        assert_eq!(json, format!("\"{name}\""));
        assert_eq!(serde_json::from_str::<ToyDensity>(&json).unwrap(), density);
    }
    assert_eq!("moons".parse::<ToyDensity>().unwrap(), ToyDensity::Moons);
    assert_eq!(
        serde_json::from_str::<ToyDensity>("\"moons\"").unwrap(),
        ToyDensity::Moons
    );
    assert_eq!(
        " Checkerboard ".parse::<ToyDensity>().unwrap(),
        ToyDensity::Checkerboard
    );
    let err = "9gaussians".parse::<ToyDensity>().unwrap_err().to_string();
    for name in names {
        assert!(err.contains(name), "error '{err}' does not list {name}");
    }
    assert!(serde_json::from_str::<ToyDensity>("\"swissroll\"")
        .unwrap_err()
        .to_string()
        .contains("8gaussians"));
}

#[test]
fn log_density_only_where_exact_and_rejects_bad_input() {
    let x = Tensor::zeros([4, 2], (Kind::Float, Device::Cpu));
    for density in ToyDensity::ALL {
        let exact = matches!(
            density,
            ToyDensity::EightGaussians | ToyDensity::Checkerboard
        );
        assert_eq!(
            density.log_density(&x).unwrap().is_some(),
            exact,
            "{density}"
        );
        assert!(density
            .log_density(&Tensor::zeros([4, 3], (Kind::Float, Device::Cpu)))
            .is_err());
        assert!(density
            .log_density(&Tensor::zeros([4, 2], (Kind::Int64, Device::Cpu)))
            .is_err());
        assert!(density
            .log_density(&Tensor::zeros([] as [i64; 0], (Kind::Float, Device::Cpu)))
            .is_err());
    }
}
