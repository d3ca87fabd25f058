//! GLO's per-image codes: their initialisation, the projection onto the unit sphere, and the
//! GLO baseline sampler (a full-covariance Gaussian fitted to the codes).
//!
//! * **Initialisation** ([`CodeInit`]): small random codes (the official code draws them from
//!   `N(0, 0.01^2)`, `model.weights_init`), or the images' leading principal components, as the
//!   GLO paper does (Bojanowski et al. 2018, section 3.3: "initialized with PCA"). The PCA is the
//!   randomised subspace iteration of Halko, Martinsson & Tropp ("Finding Structure with
//!   Randomness", SIAM Review 2011, algorithm 4.4) over the centred images in blocks of rows, so
//!   its memory is `O(D k)` besides one block, not `O(N D)`; then codes = centred images times the
//!   top `n_z` principal directions. Either way the codes are then projected onto the sphere.
//! * **Projection**: `z_i <- z_i / |z_i|` after every optimiser step (SPEC section 4; the
//!   official code projects once per epoch and normalises inside the generator).
//! * **Gaussian baseline** ([`CodeGaussian`]): the GLO paper's sampler, `z ~ N(mu, Sigma)` with the
//!   mean and the (unbiased) covariance of the codes, projected onto the sphere (the official
//!   `utils.sample_gaussian`). The fit runs in `f64`; `Sigma = L L^T` by Cholesky, with a jitter
//!   `1e-10 tr(Sigma) / d`, tenfold until it succeeds, when the codes span less than every
//!   dimension.
//!
//! ```
//! use genflow::glann::codes::{project_to_sphere, CodeGaussian};
//! use genflow::tch::{Kind, Tensor};
//! let mut z = Tensor::randn([100, 8], (Kind::Float, tch::Device::Cpu));
//! project_to_sphere(&mut z)?;
//! let gaussian = CodeGaussian::fit(&z)?;
//! let samples = gaussian.sample(5)?;       // from libtorch's generator
//! let norms = samples.square().sum_dim_intlist(1, false, Kind::Float).sqrt();
//! assert!(f64::try_from((norms - 1.0).abs().max())? < 1e-5);
//! # Ok::<(), genflow::Error>(())
//! ```

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Images per block of the PCA's products.
const PCA_BLOCK: i64 = 4096;
/// Extra directions of the randomised range finder (Halko et al.'s oversampling `p`).
const PCA_OVERSAMPLING: i64 = 10;
/// Subspace (power) iterations of the PCA.
const PCA_ITERATIONS: usize = 4;
/// Cholesky attempts of the Gaussian fit, the jitter growing tenfold each time.
const CHOLESKY_TRIES: usize = 12;

/// How GLO's codes start (`model.codes`).
///
/// ```toml
/// [model.codes]
/// init = "pca"          # or "random" with std = 0.01
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "init", rename_all = "lowercase", deny_unknown_fields)]
pub enum CodeInit {
    /// `N(0, std^2)` per entry (official: 0.01), then projected onto the sphere.
    Random {
        #[serde(default = "default_std")]
        std: f64,
    },
    /// The images' leading principal components, then projected onto the sphere.
    #[default]
    Pca,
}

fn default_std() -> f64 {
    0.01
}

impl CodeInit {
    /// Checks the standard deviation.
    pub fn validate(&self) -> Result<()> {
        match self {
            CodeInit::Random { std } if !(std.is_finite() && *std > 0.0) => Err(Error::config(
                format!("model.codes.std must be a positive number, got {std}"),
            )),
            _ => Ok(()),
        }
    }
}

/// The Euclidean norm of each row of `z` `[N, d]`, as `[N, 1]`.
pub fn row_norms(z: &Tensor) -> Result<Tensor> {
    Ok(z.f_square()?
        .f_sum_dim_intlist([1i64].as_slice(), true, z.kind())?
        .f_sqrt()?)
}

/// Projects each row of `z` onto the unit sphere in place (without recording a gradient); a row
/// of zeros becomes the first basis vector.
pub fn project_to_sphere(z: &mut Tensor) -> Result<()> {
    tch::no_grad(|| -> Result<()> {
        let norms = row_norms(z)?;
        let zero = norms.f_eq(0.0)?;
        let first = Tensor::f_zeros([z.size()[1]], (z.kind(), z.device()))?.f_index_fill(
            0,
            &Tensor::from(0i64).f_to_device(z.device())?,
            1.0,
        )?;
        let projected = z.f_div(&norms.f_clamp_min(f64::MIN_POSITIVE)?)?;
        let projected = first.f_expand_as(z)?.f_where_self(&zero, &projected)?;
        z.f_copy_(&projected)?;
        Ok(())
    })
}

/// The largest `| |z_i| - 1 |` over the rows of `z` (0 for codes on the sphere).
pub fn sphere_deviation(z: &Tensor) -> Result<f64> {
    let norms = row_norms(&z.f_to_kind(Kind::Double)?)?;
    Ok(f64::try_from(norms.f_sub_scalar(1.0)?.f_abs()?.f_max()?)?)
}

/// Codes of `images` (`u8 [N, C, H, W]` with `levels` grey levels) by PCA: the centred images
/// (intensities in `[0, 1]`) projected on their `n_z` leading principal directions, `f32 [N, n_z]`
/// on `device`, not yet normalised. When `n_z` exceeds `min(N, C H W)` (tiny data sets), the
/// columns past that many directions are zero. Random draws come from libtorch's generator.
pub fn pca_codes(images: &Tensor, levels: u32, n_z: i64, device: Device) -> Result<Tensor> {
    let size = images.size();
    if size.len() != 4 || size[0] < 2 || images.kind() != Kind::Uint8 {
        return Err(Error::shape(format!(
            "PCA codes need at least 2 images u8 [N, C, H, W], got {:?} {size:?}",
            images.kind()
        )));
    }
    let (n, d) = (size[0], size[1] * size[2] * size[3]);
    if n_z < 1 {
        return Err(Error::config(format!(
            "model.n_z must be positive, got {n_z}"
        )));
    }
    let directions = n_z.min(d).min(n);
    let options = (Kind::Double, device);
    let scale = 1.0 / (f64::from(levels) - 1.0);
    let block = |start: i64| -> Result<Tensor> {
        let rows = PCA_BLOCK.min(n - start);
        Ok(images
            .f_narrow(0, start, rows)?
            .f_reshape([rows, d])?
            .f_to_device(device)?
            .f_to_kind(Kind::Double)?
            .f_mul_scalar(scale)?)
    };
    let starts: Vec<i64> = (0..n).step_by(PCA_BLOCK as usize).collect();
    let mut mean = Tensor::f_zeros([d], options)?;
    for &s in &starts {
        mean =
            mean.f_add(&block(s)?.f_sum_dim_intlist([0i64].as_slice(), false, Kind::Double)?)?;
    }
    let mean = mean.f_div_scalar(n as f64)?;
    let centred = |s: i64| -> Result<Tensor> { Ok(block(s)?.f_sub(&mean)?) };
    let k = (directions + PCA_OVERSAMPLING).min(d).min(n);
    let (mut q, _) = Tensor::f_linalg_qr(&Tensor::f_randn([d, k], options)?, "reduced")?;
    for _ in 0..PCA_ITERATIONS {
        let mut y = Tensor::f_zeros([d, k], options)?;
        for &s in &starts {
            let x = centred(s)?;
            y = y.f_add(&x.f_tr()?.f_matmul(&x.f_matmul(&q)?)?)?;
        }
        q = Tensor::f_linalg_qr(&y, "reduced")?.0;
    }
    // B = Xc Q; the eigenvectors of B^T B rotate Q onto the principal directions.
    let mut gram = Tensor::f_zeros([k, k], options)?;
    for &s in &starts {
        let b = centred(s)?.f_matmul(&q)?;
        gram = gram.f_add(&b.f_tr()?.f_matmul(&b)?)?;
    }
    let (_, vectors) = gram.f_linalg_eigh("L")?;
    let top = vectors
        .f_flip([1i64].as_slice())?
        .f_narrow(1, 0, directions)?;
    let basis = q.f_matmul(&top)?;
    let codes = starts
        .iter()
        .map(|&s| Ok(centred(s)?.f_matmul(&basis)?))
        .collect::<Result<Vec<_>>>()?;
    let codes = Tensor::f_cat(&codes, 0)?.f_to_kind(Kind::Float)?;
    Ok(codes.f_constant_pad_nd([0, n_z - directions])?)
}

/// A full-covariance Gaussian fitted to codes, sampled onto the unit sphere (see the module docs).
#[derive(Debug)]
pub struct CodeGaussian {
    mean: Tensor,
    /// `L` with `L L^T = Sigma` (plus jitter), `f64 [d, d]`.
    factor: Tensor,
    kind: Kind,
}

impl CodeGaussian {
    /// Fits the mean and covariance of `codes` `[N >= 2, d]`.
    pub fn fit(codes: &Tensor) -> Result<Self> {
        let size = codes.size();
        if size.len() != 2 || size[0] < 2 || !codes.is_floating_point() {
            return Err(Error::shape(format!(
                "a Gaussian fit needs at least 2 float codes [N, d], got {:?} {size:?}",
                codes.kind()
            )));
        }
        let z = codes.f_to_kind(Kind::Double)?;
        let mean = z.f_mean_dim([0i64].as_slice(), false, Kind::Double)?;
        let centred = z.f_sub(&mean)?;
        let cov = centred
            .f_tr()?
            .f_matmul(&centred)?
            .f_div_scalar((size[0] - 1) as f64)?;
        let d = size[1];
        let eye = Tensor::f_eye(d, (Kind::Double, codes.device()))?;
        let mut jitter = 0.0;
        let base = (f64::try_from(cov.f_trace()?)? / d as f64).max(f64::MIN_POSITIVE) * 1e-10;
        for _ in 0..CHOLESKY_TRIES {
            let (factor, info) = cov
                .f_add(&eye.f_mul_scalar(jitter)?)?
                .f_linalg_cholesky_ex(false, false)?;
            if i64::try_from(info)? == 0 {
                return Ok(CodeGaussian {
                    mean,
                    factor,
                    kind: codes.kind(),
                });
            }
            jitter = if jitter == 0.0 { base } else { jitter * 10.0 };
        }
        Err(Error::NonFinite(
            "the covariance of the codes has no Cholesky factor even with jitter; the codes \
             hold NaN or infinity"
                .to_string(),
        ))
    }

    /// `n` draws `mu + L eps`, `eps ~ N(0, I)` from libtorch's generator, projected onto the unit
    /// sphere, in the codes' kind and device.
    pub fn sample(&self, n: i64) -> Result<Tensor> {
        let d = self.mean.size()[0];
        let eps = Tensor::f_randn([n, d], (Kind::Double, self.mean.device()))?;
        let mut z = eps
            .f_matmul(&self.factor.f_tr()?)?
            .f_add(&self.mean)?
            .f_to_kind(self.kind)?;
        project_to_sphere(&mut z)?;
        Ok(z)
    }
}
