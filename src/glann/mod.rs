//! GLANN: non-adversarial image generation with GLO and IMLE (Hoshen, Li & Malik, "Non-Adversarial
//! Image Synthesis with Generative Latent Nearest Neighbors", CVPR 2019; genflow SPEC section 4).
//!
//! Two stages, no adversary:
//!
//! 1. **GLO** (Bojanowski et al., "Optimizing the Latent Space of Generative Networks", ICML
//!    2018): a [`Generator`] `G` and one code `z_i` per training image are trained together,
//!    `min sum_i d(x_i, G(z_i))` with `d` a [`ReconstructionLoss`] (the Laplacian-pyramid L1
//!    distance by default), the codes kept on the unit sphere ([`codes`]).
//! 2. **IMLE** (Li & Malik, "Implicit Maximum Likelihood Estimation", 2018) in the code space: a
//!    [`Mapper`] `T` from noise `e ~ N(0, I)` to codes is fitted so that every code has a mapped
//!    noise sample near it. Each round draws many `e`, finds for each code its nearest `T(e)`
//!    exactly ([`search`]), then regresses `T(e_nn(i))` onto `z_i` for some epochs ([`imle`]).
//!
//! Sampling is `x = G(T(e))`. The GLO baseline samples `x = G(z)` with `z` from a full-covariance
//! Gaussian fitted to the codes ([`codes::CodeGaussian`]).
//!
//! [`GlannModel`] holds the three parts in one `VarStore`: the generator under `generator.*`, the
//! code table as the variable `codes` (`[N, n_z]`, so that an optimiser group `pattern = "codes"`
//! gives it its own learning rate, and checkpoints hold it), the mapper under `mapper.*`, and the
//! buffer `imle.noise` (`[N, noise_dim]`: each code's nearest noise in the current IMLE round, so
//! that a run resumed within a round regresses onto the same targets).
//!
//! ```
//! use genflow::glann::{GlannModel, GlannModelConfig, GeneratorConfig, ReconstructionLoss};
//! use genflow::tch::{nn::VarStore, Device, Kind, Tensor};
//! let vs = VarStore::new(Device::Cpu);
//! let config = GlannModelConfig {
//!     n_z: 8,
//!     generator: GeneratorConfig { out_shape: [1, 8, 8], hidden: 16, channels: vec![8], batch_norm: true },
//!     mapper: Default::default(),
//!     codes: Default::default(),
//! };
//! let model = GlannModel::new(&vs.root(), 20, &config)?;
//! let images = Tensor::rand([4, 1, 8, 8], (Kind::Float, Device::Cpu));
//! let index = Tensor::from_slice(&[0i64, 5, 6, 19]);
//! let loss = model.glo_loss(&ReconstructionLoss::default(), &images, &index)?;
//! loss.backward();
//! let e = Tensor::randn([3, model.mapper.noise_dim()], (Kind::Float, Device::Cpu));
//! assert_eq!(model.generate(&e)?.size(), [3, 1, 8, 8]);
//! # Ok::<(), genflow::Error>(())
//! ```

pub mod codes;
pub mod generator;
pub mod imle;
pub mod mapper;
pub mod pyramid;
pub mod search;

pub use codes::CodeInit;
pub use generator::{Generator, GeneratorConfig};
pub use mapper::{Mapper, MapperConfig};
pub use pyramid::{LaplacianPyramid, ReconstructionLoss};

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn::Path;
use tch::{Kind, Tensor};

/// The VarStore name of the code table.
pub const CODES: &str = "codes";

/// The model of a GLANN run (`[model]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlannModelConfig {
    /// Dimension of the codes (official: 64).
    #[serde(default = "default_n_z")]
    pub n_z: i64,
    pub generator: GeneratorConfig,
    #[serde(default)]
    pub mapper: MapperConfig,
    #[serde(default)]
    pub codes: CodeInit,
}

fn default_n_z() -> i64 {
    64
}

impl GlannModelConfig {
    /// Checks every part; messages name the key.
    pub fn validate(&self) -> Result<()> {
        if self.n_z < 1 {
            return Err(Error::config(format!(
                "model.n_z must be positive, got {}",
                self.n_z
            )));
        }
        self.generator.validate()?;
        self.mapper.validate()?;
        self.codes.validate()
    }
}

/// Generator, code table, mapper and the IMLE targets of a GLANN model (see the module docs).
#[derive(Debug)]
pub struct GlannModel {
    pub generator: Generator,
    /// The code table `[N, n_z]`, one code per training image, on the unit sphere.
    pub codes: Tensor,
    pub mapper: Mapper,
    /// Each code's nearest noise of the current IMLE round, `[N, noise_dim]` (a buffer).
    pub imle_noise: Tensor,
}

impl GlannModel {
    /// A model for `n_images` training images, its variables under `p`. The codes start as
    /// `config.codes` says for random codes, already on the sphere; PCA codes need the images
    /// ([`codes::pca_codes`]) and replace these before training.
    pub fn new(p: &Path, n_images: i64, config: &GlannModelConfig) -> Result<Self> {
        config.validate()?;
        if n_images < 1 {
            return Err(Error::config(
                "a GLANN model needs at least 1 training image",
            ));
        }
        let std = match config.codes {
            CodeInit::Random { std } => std,
            CodeInit::Pca => 1.0,
        };
        let mut codes = p.var(
            CODES,
            &[n_images, config.n_z],
            tch::nn::Init::Randn {
                mean: 0.0,
                stdev: std,
            },
        );
        codes::project_to_sphere(&mut codes)?;
        let noise_dim = config.mapper.noise_dim;
        Ok(GlannModel {
            generator: Generator::new(&(p / "generator"), config.n_z, &config.generator)?,
            codes,
            mapper: Mapper::new(&(p / "mapper"), config.n_z, &config.mapper)?,
            imle_noise: (p / "imle").zeros_no_train("noise", &[n_images, noise_dim]),
        })
    }

    /// GLO's training loss on a batch: the mean over the batch of `d(x_b, G(z_{index_b}))` for
    /// images `[B, C, H, W]` (intensities in `[0, 1]`) with indices `index` (`i64 [B]`) into the
    /// code table; the generator in training mode.
    pub fn glo_loss(
        &self,
        loss: &ReconstructionLoss,
        images: &Tensor,
        index: &Tensor,
    ) -> Result<Tensor> {
        let z = self.codes.f_index_select(0, index)?;
        let x = self.generator.forward(&z, true)?;
        Ok(loss.per_image(&x, images)?.f_mean(Kind::Float)?)
    }

    /// Images `G(T(e))` of noise `e` `[N, noise_dim]`, both networks in evaluation mode, without
    /// gradients.
    pub fn generate(&self, e: &Tensor) -> Result<Tensor> {
        tch::no_grad(|| {
            self.generator
                .forward(&self.mapper.forward(e, false)?, false)
        })
    }

    /// The reconstructions `G(z_i)` of training images `index` (`i64`), evaluation mode, without
    /// gradients.
    pub fn reconstruct(&self, index: &Tensor) -> Result<Tensor> {
        tch::no_grad(|| {
            let z = self.codes.f_index_select(0, index)?;
            self.generator.forward(&z, false)
        })
    }
}
