//! The six 2-D toy densities of FFJORD (Grathwohl et al., ICLR 2019) and Residual Flows
//! (Chen et al., NeurIPS 2019), generated exactly as their `toy_data.py` defines them
//! (SPEC section 7), in f64 from a seeded [`StdRng`].
//!
//! Two of them have a closed-form density, so a model's negative log-likelihood can be compared
//! with the truth: `8gaussians` (true NLL 2.8324 nats by Monte Carlo, 2.8319 by quadrature) and
//! `checkerboard` (true NLL `ln 32 = 3.46574` nats).
//!
//! ```
//! use genflow::data::toy::ToyDensity;
//!
//! let density: ToyDensity = "checkerboard".parse()?;
//! let x = density.sample(1000, 7); // f64 [1000, 2]
//! let log_p = density.log_density(&x)?.expect("checkerboard has a closed-form density");
//! let nll = -log_p.mean(genflow::tch::Kind::Double).double_value(&[]);
//! assert!((nll - 32f64.ln()).abs() < 1e-12);
//! # Ok::<(), genflow::Error>(())
//! ```

use std::f64::consts::{FRAC_1_SQRT_2, PI};
use std::fmt;
use std::str::FromStr;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use tch::{Kind, Tensor};

use crate::{Error, Result};

/// A point of the plane.
type Point = [f64; 2];

/// One of the 2-D toy densities of FFJORD / Residual Flows.
///
/// Its name (for [`FromStr`], [`fmt::Display`] and serde) is the reference code's:
/// `8gaussians`, `checkerboard`, `2spirals`, `2moons` (`moons` is accepted too), `pinwheel`, `rings`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum ToyDensity {
    /// Mixture of 8 isotropic Gaussians, centres `4 u_k / 1.414` on a circle, sigma `0.5 / 1.414`.
    EightGaussians,
    /// Uniform on 8 squares of side 2 in `[-4, 4]^2`, like the black squares of a chessboard.
    Checkerboard,
    /// Two interleaved Archimedean spirals, `d` and `-d`.
    TwoSpirals,
    /// Two interleaved half circles (scikit-learn's `make_moons`, noise 0.1), scaled by 2.
    Moons,
    /// Five curved arms.
    Pinwheel,
    /// Four concentric circles of radius 3, 2.25, 1.5 and 0.75.
    Rings,
}

/// Standard deviation of one component of `8gaussians`: `0.5 / 1.414`.
const GAUSSIAN_SIGMA: f64 = 0.5 / DIAGONAL;
/// The reference code's literal for the square root of 2, by which `8gaussians` is divided.
const DIAGONAL: f64 = 1.414;
/// Area of the support of `checkerboard`: 8 cells of side 2.
const CHECKERBOARD_AREA: f64 = 32.0;
/// Radii of the four circles of `rings`, outermost first.
const RING_RADII: [f64; 4] = [3.0, 2.25, 1.5, 0.75];

impl ToyDensity {
    /// Every toy density, in the order of the reference code.
    pub const ALL: [ToyDensity; 6] = [
        ToyDensity::EightGaussians,
        ToyDensity::Checkerboard,
        ToyDensity::TwoSpirals,
        ToyDensity::Moons,
        ToyDensity::Pinwheel,
        ToyDensity::Rings,
    ];

    /// The reference code's name, e.g. `"8gaussians"`.
    pub fn name(self) -> &'static str {
        match self {
            ToyDensity::EightGaussians => "8gaussians",
            ToyDensity::Checkerboard => "checkerboard",
            ToyDensity::TwoSpirals => "2spirals",
            ToyDensity::Moons => "2moons",
            ToyDensity::Pinwheel => "pinwheel",
            ToyDensity::Rings => "rings",
        }
    }

    /// `n` samples as an f64 tensor `[n, 2]` on the CPU; the same `seed` gives the same samples.
    ///
    /// The generators (SPEC section 7; `U` uniform on `[0, 1)`, `N` standard normal):
    /// * `8gaussians`: `x = (c_k + 0.5 N_2) / 1.414`, `k` uniform in `0..8`, `c_k = 4 * unit vector` at
    ///   0, 180, 90, 270, 45, -45, 135, -135 degrees.
    /// * `checkerboard`: `x1 = 4U - 2`, `x2 = U' - 2b + (floor(x1) mod 2)` with `b` uniform in {0, 1},
    ///   output `2 (x1, x2)`.
    /// * `2spirals`: `t = sqrt(U) 3 pi`, `d = (-t cos t + 0.5 U', t sin t + 0.5 U'')`; the points `d` and
    ///   `-d` (`ceil(n/2)` pairs, the last `-d` dropped when `n` is odd), divided by 3, plus `0.1 N`.
    /// * `2moons`: `(cos t, sin t)` for `n/2` points and `(1 - cos t, 0.5 - sin t)` for the rest, `t` evenly
    ///   spaced on `[0, pi]` with both ends, plus `0.1 N`, then `2x + (-1, -0.2)`.
    /// * `pinwheel`: arm `c` of 5 (`n/5` points each, the last arm takes the remainder):
    ///   `r = 1 + 0.3 N`, `s = 0.1 N`, `a = 2 pi c / 5 + 0.25 exp(r)`,
    ///   output `2 (r cos a + s sin a, -r sin a + s cos a)`.
    /// * `rings`: `n/4` points on each circle of radius 3, 2.25, 1.5 (the circle of radius 0.75 takes
    ///   the remainder), angles evenly spaced on `[0, 2 pi)`, plus `0.08 N`.
    ///
    /// The rows are then put in random order, as the reference code's `shuffle`/`permutation` does,
    /// so that any prefix of the sample is a fair sample too.
    pub fn sample(&self, n: usize, seed: u64) -> Tensor {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut points = match self {
            ToyDensity::EightGaussians => (0..n).map(|_| eight_gaussians(&mut rng)).collect(),
            ToyDensity::Checkerboard => (0..n).map(|_| checkerboard(&mut rng)).collect(),
            ToyDensity::TwoSpirals => two_spirals(n, &mut rng),
            ToyDensity::Moons => moons(n, &mut rng),
            ToyDensity::Pinwheel => pinwheel(n, &mut rng),
            ToyDensity::Rings => rings(n, &mut rng),
        };
        points.shuffle(&mut rng);
        let flat: Vec<f64> = points.into_iter().flatten().collect();
        Tensor::from_slice(&flat).reshape([n as i64, 2])
    }

    /// The exact log-density `log p(x)` (natural log) of `points` `[..., 2]` (any float dtype and
    /// device), as an f64 tensor `[...]` on the same device, or `None` for the densities that have no
    /// closed form (`2spirals`, `2moons`, `pinwheel`, `rings`).
    ///
    /// * `8gaussians`: `log p(x) = log sum_k N(x; c_k / 1.414, sigma^2 I) - ln 8`, `sigma = 0.5 / 1.414`.
    /// * `checkerboard`: `-ln 32` on the 8 half-open cells `2 ([i, i+1) x [j, j+1))`,
    ///   `i, j in {-2..1}`, `i + j` even (total area 32), and `-inf` elsewhere.
    ///
    /// Errors when `points` is not a float tensor whose last dimension is 2.
    pub fn log_density(&self, points: &Tensor) -> Result<Option<Tensor>> {
        let size = points.size();
        if size.last() != Some(&2) || !points.f_is_floating_point()? {
            return Err(Error::shape(format!(
                "toy log-density needs float points of shape [..., 2], got {:?} {size:?}",
                points.kind()
            )));
        }
        let x = points.f_to_kind(Kind::Double)?;
        match self {
            ToyDensity::EightGaussians => Ok(Some(eight_gaussians_log_density(&x)?)),
            ToyDensity::Checkerboard => Ok(Some(checkerboard_log_density(&x)?)),
            _ => Ok(None),
        }
    }

    /// Half-width of the square window `[-r, r]^2` that holds (practically all of) the density:
    /// 4 for all six, the window FFJORD and Residual Flows plot them in.
    pub fn plot_range(&self) -> f64 {
        4.0
    }
}

/// The 8 centres `c_k` of `8gaussians` before the division by 1.414, in the reference order.
fn eight_gaussian_centres() -> [Point; 8] {
    let d = 4.0 * FRAC_1_SQRT_2;
    [
        [4.0, 0.0],
        [-4.0, 0.0],
        [0.0, 4.0],
        [0.0, -4.0],
        [d, d],
        [d, -d],
        [-d, d],
        [-d, -d],
    ]
}

/// The standard deviation of each coordinate of one `8gaussians` component, `0.5 / 1.414`
/// (SPEC section 7).
pub const EIGHT_GAUSSIANS_SIGMA: f64 = GAUSSIAN_SIGMA;

/// The 8 component means `c_k / 1.414` of `8gaussians` (radius `4 / 1.414 = 2.8289`), in the
/// reference order of the angles 0, 180, 90, 270, 45, -45, 135, -135 degrees.
pub fn eight_gaussians_means() -> [[f64; 2]; 8] {
    eight_gaussian_centres().map(|c| [c[0] / DIAGONAL, c[1] / DIAGONAL])
}

/// A standard normal draw.
fn normal(rng: &mut StdRng) -> f64 {
    rng.sample(StandardNormal)
}

/// `p + std * N_2`.
fn jitter(p: Point, std: f64, rng: &mut StdRng) -> Point {
    [p[0] + std * normal(rng), p[1] + std * normal(rng)]
}

/// Sizes of `k` groups holding `n` points: `n / k` each, the last group takes the remainder.
fn group_sizes(n: usize, k: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..k).map(move |c| {
        (
            c,
            if c + 1 == k {
                n - (k - 1) * (n / k)
            } else {
                n / k
            },
        )
    })
}

/// `count` angles evenly spaced on `[0, span]` (`with_end`) or `[0, span)`.
fn even_angles(count: usize, span: f64, with_end: bool) -> impl Iterator<Item = f64> {
    let intervals = if with_end {
        count.saturating_sub(1).max(1)
    } else {
        count.max(1)
    };
    (0..count).map(move |i| span * i as f64 / intervals as f64)
}

/// One `8gaussians` point (generators: [`ToyDensity::sample`]).
fn eight_gaussians(rng: &mut StdRng) -> Point {
    let c = eight_gaussian_centres()[rng.random_range(0..8)];
    let p = [0.5 * normal(rng), 0.5 * normal(rng)];
    [(p[0] + c[0]) / DIAGONAL, (p[1] + c[1]) / DIAGONAL]
}

/// One `checkerboard` point.
fn checkerboard(rng: &mut StdRng) -> Point {
    let x1 = 4.0 * rng.random::<f64>() - 2.0;
    let b = f64::from(rng.random_range(0..2u8));
    let x2 = rng.random::<f64>() - 2.0 * b + x1.floor().rem_euclid(2.0);
    [2.0 * x1, 2.0 * x2]
}

/// `n` `2spirals` points, in generation order.
fn two_spirals(n: usize, rng: &mut StdRng) -> Vec<Point> {
    let d: Vec<Point> = (0..n.div_ceil(2))
        .map(|_| {
            let t = rng.random::<f64>().sqrt() * 3.0 * PI;
            let (u1, u2): (f64, f64) = (rng.random(), rng.random());
            [-t.cos() * t + 0.5 * u1, t.sin() * t + 0.5 * u2]
        })
        .collect();
    let mirrored = d.iter().map(|p| [-p[0], -p[1]]);
    let both: Vec<Point> = d.iter().copied().chain(mirrored).take(n).collect();
    both.into_iter()
        .map(|p| jitter([p[0] / 3.0, p[1] / 3.0], 0.1, rng))
        .collect()
}

/// `n` `2moons` points, in generation order.
fn moons(n: usize, rng: &mut StdRng) -> Vec<Point> {
    let arc = |(moon, count)| {
        even_angles(count, PI, true).map(move |t: f64| match moon {
            0 => [t.cos(), t.sin()],
            _ => [1.0 - t.cos(), 0.5 - t.sin()],
        })
    };
    let clean: Vec<Point> = group_sizes(n, 2).flat_map(arc).collect();
    clean
        .into_iter()
        .map(|p| {
            let q = jitter(p, 0.1, rng);
            [2.0 * q[0] - 1.0, 2.0 * q[1] - 0.2]
        })
        .collect()
}

/// `n` `pinwheel` points, arm by arm.
fn pinwheel(n: usize, rng: &mut StdRng) -> Vec<Point> {
    let arms: Vec<usize> = group_sizes(n, 5)
        .flat_map(|(c, count)| std::iter::repeat_n(c, count))
        .collect();
    arms.into_iter()
        .map(|c| {
            let r = 1.0 + 0.3 * normal(rng);
            let s = 0.1 * normal(rng);
            let a = 2.0 * PI * c as f64 / 5.0 + 0.25 * r.exp();
            let (sin, cos) = a.sin_cos();
            [2.0 * (r * cos + s * sin), 2.0 * (-r * sin + s * cos)]
        })
        .collect()
}

/// `n` `rings` points, circle by circle.
fn rings(n: usize, rng: &mut StdRng) -> Vec<Point> {
    let circle = |(ring, count): (usize, usize)| {
        let radius = RING_RADII[ring];
        even_angles(count, 2.0 * PI, false).map(move |t| [radius * t.cos(), radius * t.sin()])
    };
    let clean: Vec<Point> = group_sizes(n, RING_RADII.len()).flat_map(circle).collect();
    clean.into_iter().map(|p| jitter(p, 0.08, rng)).collect()
}

/// `log p(x)` of `8gaussians` for f64 `x` `[..., 2]`: a log-sum-exp over the 8 components.
fn eight_gaussians_log_density(x: &Tensor) -> Result<Tensor> {
    let flat: Vec<f64> = eight_gaussian_centres()
        .iter()
        .flatten()
        .map(|c| c / DIAGONAL)
        .collect();
    let means = Tensor::f_from_slice(&flat)?
        .f_reshape([8, 2])?
        .f_to_device(x.device())?;
    let squared =
        (x.f_unsqueeze(-2)? - means)
            .f_square()?
            .f_sum_dim_intlist(-1, false, Kind::Double)?;
    let variance = GAUSSIAN_SIGMA * GAUSSIAN_SIGMA;
    let log_norm = (2.0 * PI * variance).ln() + 8f64.ln();
    Ok((squared * (-0.5 / variance)).f_logsumexp(-1, false)? - log_norm)
}

/// `log p(x)` of `checkerboard` for f64 `x` `[..., 2]`: `log(1[x in a cell]) - ln 32`.
fn checkerboard_log_density(x: &Tensor) -> Result<Tensor> {
    let cell = (x / 2.0).f_floor()?;
    let in_box = cell
        .f_ge(-2.0)?
        .f_logical_and(&cell.f_le(1.0)?)?
        .f_all_dim(-1, false)?;
    let even = cell
        .f_sum_dim_intlist(-1, false, Kind::Double)?
        .f_remainder(2.0)?
        .f_eq(0.0)?;
    let inside = in_box.f_logical_and(&even)?.f_to_kind(Kind::Double)?;
    Ok(inside.f_log()? - CHECKERBOARD_AREA.ln())
}

impl fmt::Display for ToyDensity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ToyDensity {
    type Err = Error;

    /// Parses a reference name (case-insensitive); `moons` is accepted for `2moons`.
    fn from_str(s: &str) -> Result<Self> {
        let key = s.trim().to_ascii_lowercase();
        if key == "moons" {
            return Ok(ToyDensity::Moons);
        }
        ToyDensity::ALL
            .into_iter()
            .find(|d| d.name() == key)
            .ok_or_else(|| {
                let names: Vec<&str> = ToyDensity::ALL.iter().map(|d| d.name()).collect();
                Error::config(format!(
                    "unknown toy density '{s}'; valid names: {} (or 'moons' for 2moons)",
                    names.join(", ")
                ))
            })
    }
}

impl TryFrom<String> for ToyDensity {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<ToyDensity> for &'static str {
    fn from(density: ToyDensity) -> Self {
        density.name()
    }
}

/// The data of a toy-density run (`[data]` of `task = "toy-density"`): the density, and how
/// many test points evaluations draw.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToyDataConfig {
    /// The toy density.
    pub density: ToyDensity,
    /// Test points drawn by evaluations (default [`TOY_TEST_SIZE`]).
    #[serde(default = "toy_test_size")]
    pub test_size: usize,
}

/// The default number of toy test points.
pub const TOY_TEST_SIZE: usize = 20_000;

fn toy_test_size() -> usize {
    TOY_TEST_SIZE
}

impl ToyDataConfig {
    /// Checks the test size.
    pub fn validate(&self) -> Result<()> {
        crate::limits::check(
            "data.test_size",
            self.test_size as i64,
            crate::limits::MAX_ITEMS,
        )
    }
}
