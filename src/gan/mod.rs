//! Generative adversarial networks (SPEC section 3): generator and discriminator networks
//! ([`nets`]), losses, gradient penalties and O-GAN's correlation ([`loss`]), and the alternating
//! and single-loss updates as a training objective ([`update`]).
//!
//! The tasks `toy-gan` and `image-gan` ([`crate::tasks`]) put these together with data, pictures
//! and evaluation; this module knows nets, losses and the optimiser, not files or the command line.
//!
//! ```
//! use genflow::gan::{Gan, GanLosses, GanTrainConfig, MlpGanConfig, UpdateRule};
//! use genflow::optim::{OptimConfig, Optimizer};
//! use tch::{nn::VarStore, Device, Kind, Tensor};
//!
//! let vs = VarStore::new(Device::Cpu);
//! let config = MlpGanConfig {
//!     z_dim: 4, hidden: vec![16, 16], generator_norm: Default::default(),
//!     spectral_norm: false, encoder: false,
//! };
//! let gan = Gan::mlp(&vs.root(), &config, 2)?;
//! let train = GanTrainConfig { update: UpdateRule::SingleLoss, ..Default::default() };
//! let losses = GanLosses::new(&gan, &train);
//! let mut opt = Optimizer::new(&vs, &OptimConfig::default())?;
//!
//! // one single-loss step: L_D + L_G(D(x_f)) - L_G(D(sg(x_f))), one backward, one step
//! let x = Tensor::randn([32, 2], (Kind::Float, Device::Cpu));
//! let z = gan.latents(32, Kind::Float, Device::Cpu);
//! let fake = gan.generator.forward_t(&z, true);
//! let (loss, d, _g) = losses.single_loss(&x, &fake, &z)?;
//! // its value is the discriminator's loss
//! assert!((loss.double_value(&[]) - d.loss.double_value(&[])).abs() < 1e-6);
//! opt.zero_grad();
//! loss.backward();
//! opt.step()?;
//! # Ok::<(), genflow::Error>(())
//! ```

pub mod loss;
pub mod nets;
pub mod update;

pub use loss::{GanLoss, Penalty, QpConfig, QpDistance};
pub use nets::{ConvGanConfig, Discriminator, Gan, Generator, GeneratorNorm, MlpGanConfig};
pub use update::{
    is_generator, GanLosses, GanObjective, GanTrainConfig, Judgement, RealData, UpdateRule,
};
