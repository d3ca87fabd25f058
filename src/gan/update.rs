//! The two GAN updates, as a training [`Objective`]: the classic alternating update and the
//! single-loss update through stop-gradient (Su, "巧断梯度：单个loss实现GAN模型", 2019-02-22;
//! SPEC section 3).
//!
//! Both train the generator `G` and the discriminator `D` held by one optimiser, whose parameter
//! groups (`generator.*`, `discriminator.*`) give each net its learning rate and gradient
//! transforms. One training step draws real items `x` and latents `z ~ N(0, I)` and takes
//! `x_f = G(z)` once; with `sg` the stop-gradient:
//!
//! * **alternating** (Goodfellow et al. 2014, Algorithm 1 with one D step): backward of
//!   `L_D(x, sg(x_f))`, a step of `D`'s parameters only ([`Optimizer::step_part`]), then backward of
//!   `L_G(D(x_f))` through the *updated* `D`, a step of `G`'s parameters only. Two backward passes,
//!   two optimiser steps; the same as PyTorch's two optimisers, since every parameter keeps its
//!   own step count and the schedule advances once per training step.
//! * **single loss**: one forward of
//!   `L = L_D(x, sg(x_f)) + [L_G(D(x_f)) - L_G(D(sg(x_f)))]`, one backward, one optimiser step of
//!   both nets (a simultaneous update). The bracket is 0 in value; `D`'s gradient of its two terms
//!   cancels, because `x_f` and `sg(x_f)` are equal, so `D` receives `grad L_D` and `G` receives
//!   `grad L_G` (the second term has no path to `G`). For the hinge loss and GAN-QP the bracket is
//!   the post's `E[D(sg(x_f)) - D(x_f)]`; for O-GAN it carries `-lambda rho(z, E(x_f))`, so that `E`
//!   and `G` both get the correlation's gradient, as in the reference's single loss.
//!
//! `L_D` holds the loss's discriminator side, the gradient penalty and, for O-GAN,
//! `-lambda E[rho(z, E(sg(x_f)))]`; `L_G` the generator side and `-lambda E[rho(z, E(x_f))]`
//! ([`super::loss`]). Each call of `D` is a separate batch (real, generated, generated without
//! gradient), so batch norm sees each set on its own, as in PyTorch's DCGAN.
//!
//! Randomness: `z` (and WGAN-GP's interpolation weights) come from libtorch's generator seeded
//! from the run's seed and the step ([`Stream::Probe`]), so a resumed run draws what the
//! uninterrupted one would.

use super::loss::{interpolates, r1, row_correlation, wgan_gp, GanLoss, Penalty};
use super::nets::{Gan, DISCRIMINATOR, GENERATOR};
use crate::optim::Optimizer;
use crate::seeds::{derived_seed, Stream};
use crate::train::{loss_update, Evaluation, Objective, Update};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// How a training step updates the two nets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateRule {
    /// A discriminator step, then a generator step against the updated discriminator.
    #[default]
    Alternating,
    /// One loss, one backward pass, one optimiser step for both nets.
    SingleLoss,
}

impl UpdateRule {
    /// The name as written in TOML.
    pub fn name(self) -> &'static str {
        match self {
            UpdateRule::Alternating => "alternating",
            UpdateRule::SingleLoss => "single-loss",
        }
    }
}

/// O-GAN's weight `lambda` of `-lambda rho(z, E(G(z)))` (the reference's 0.5).
pub const DEFAULT_RHO_WEIGHT: f64 = 0.5;

/// The GAN part of `[train]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GanTrainConfig {
    /// `"alternating"` (default) or `"single-loss"`.
    #[serde(default)]
    pub update: UpdateRule,
    /// `"non-saturating"` (default), `"hinge"` or `{ gan-qp = { lambda, distance } }`.
    #[serde(default)]
    pub loss: GanLoss,
    /// `{ r1 = { gamma } }` or `{ wgan-gp = { lambda } }` on the discriminator (default none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub penalty: Option<Penalty>,
    /// O-GAN's `lambda` (needs `model.encoder = true`; default 0.5 there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rho_weight: Option<f64>,
}

impl GanTrainConfig {
    /// Checks the loss, the penalty and the correlation weight against the model (`encoder`:
    /// whether the discriminator is an O-GAN encoder).
    pub fn validate(&self, encoder: bool) -> Result<()> {
        self.loss.validate()?;
        if let Some(p) = &self.penalty {
            p.validate()?;
        }
        match self.rho_weight {
            Some(_) if !encoder => Err(Error::config(
                "train.rho_weight is O-GAN's correlation weight: it needs model.encoder = true",
            )),
            Some(w) if !(w >= 0.0 && w.is_finite()) => Err(Error::config(format!(
                "train.rho_weight must be a finite number >= 0, got {w}"
            ))),
            _ => Ok(()),
        }
    }
}

/// What the discriminator says about a batch: its outputs `[n, n_out]` (for O-GAN the codes
/// `E(x)`) and the score `[n]`, their mean.
#[derive(Debug)]
pub struct Judgement {
    pub code: Tensor,
    pub score: Tensor,
}

/// The discriminator side of a step: `L_D` and the parts it was built from.
#[derive(Debug)]
pub struct DiscriminatorSide {
    /// `L_D`, penalty and correlation term included.
    pub loss: Tensor,
    pub real: Judgement,
    /// The judgement of the generated items without a path to the generator.
    pub fake: Judgement,
    /// The gradient penalty, when there is one.
    pub penalty: Option<Tensor>,
}

/// The losses of one batch for a pair of nets (module docs).
#[derive(Debug)]
pub struct GanLosses<'a> {
    pub gan: &'a Gan,
    pub loss: GanLoss,
    pub penalty: Option<Penalty>,
    /// O-GAN's `lambda` (0 without an encoder).
    pub rho_weight: f64,
}

impl<'a> GanLosses<'a> {
    /// The losses `config` describes for `gan`.
    pub fn new(gan: &'a Gan, config: &GanTrainConfig) -> Self {
        let rho_weight = if gan.is_encoder() {
            config.rho_weight.unwrap_or(DEFAULT_RHO_WEIGHT)
        } else {
            0.0
        };
        GanLosses {
            gan,
            loss: config.loss,
            penalty: config.penalty,
            rho_weight,
        }
    }

    /// `D`'s outputs and score on `x` in training mode.
    pub fn judge(&self, x: &Tensor) -> Judgement {
        let code = self.gan.discriminator.forward_t(x, true);
        let score = code.mean_dim(1, false, code.kind());
        Judgement { code, score }
    }

    /// `-lambda E[rho(z, code)]` for O-GAN, else `None`.
    fn correlation_term(&self, z: &Tensor, code: &Tensor) -> Option<Tensor> {
        self.gan
            .is_encoder()
            .then(|| row_correlation(z, code).mean(code.kind()) * (-self.rho_weight))
    }

    /// `L_D` on real items `x` and generated items `fake` (without a graph to the generator)
    /// from latents `z`.
    pub fn discriminator_side(
        &self,
        x: &Tensor,
        fake: &Tensor,
        z: &Tensor,
    ) -> Result<DiscriminatorSide> {
        let r1_weight = match self.penalty {
            Some(Penalty::R1 { gamma }) => Some(gamma),
            _ => None,
        };
        let x_in = match r1_weight {
            Some(_) => x.detach().set_requires_grad(true),
            None => x.shallow_clone(),
        };
        let real = self.judge(&x_in);
        let fake_j = self.judge(fake);
        let mut loss = self.loss.discriminator(&real.score, &fake_j.score, x, fake);
        let penalty = match self.penalty {
            None => None,
            Some(Penalty::R1 { gamma }) => Some(r1(&real.score, &x_in, gamma)?),
            Some(Penalty::WganGp { lambda }) => {
                let x_hat = interpolates(x, fake);
                let scores = self.judge(&x_hat).score;
                Some(wgan_gp(&scores, &x_hat, lambda)?)
            }
        };
        if let Some(p) = &penalty {
            loss = &loss + p;
        }
        if let Some(rho) = self.correlation_term(z, &fake_j.code) {
            loss = &loss + rho;
        }
        Ok(DiscriminatorSide {
            loss,
            real,
            fake: fake_j,
            penalty,
        })
    }

    /// `L_G` from the real items' scores and the judgement of generated items from latents `z`.
    pub fn generator_side(&self, real_score: &Tensor, fake: &Judgement, z: &Tensor) -> Tensor {
        let loss = self.loss.generator(real_score, &fake.score);
        match self.correlation_term(z, &fake.code) {
            Some(rho) => loss + rho,
            None => loss,
        }
    }

    /// The single loss `L_D(x, sg(x_f)) + L_G(D(x_f)) - L_G(D(sg(x_f)))` for `x_f = fake` (with
    /// its graph to the generator), with `L_D`'s parts and `L_G(D(x_f))`.
    pub fn single_loss(
        &self,
        x: &Tensor,
        fake: &Tensor,
        z: &Tensor,
    ) -> Result<(Tensor, DiscriminatorSide, Tensor)> {
        let d = self.discriminator_side(x, &fake.detach(), z)?;
        let g = self.generator_side(&d.real.score, &self.judge(fake), z);
        let g_ng = self.generator_side(&d.real.score, &d.fake, z);
        Ok((&d.loss + (&g - g_ng), d, g))
    }
}

/// Where the real items come from.
pub trait RealData {
    /// The real items of training step `step`, as the nets take them, on their device.
    fn batch(&mut self, step: u64) -> Result<Tensor>;
    /// An evaluation of `gan` with the current weights, after `step` steps (optional).
    fn evaluate(&mut self, _gan: &Gan, _step: u64) -> Result<Option<Evaluation>> {
        Ok(None)
    }
}

/// The training objective of a GAN: its losses, its update rule and its data.
pub struct GanObjective<'a, R> {
    pub losses: GanLosses<'a>,
    pub rule: UpdateRule,
    pub data: R,
    /// The run's seed.
    pub seed: u64,
}

/// Whether a parameter name belongs to the discriminator.
fn is_discriminator(name: &str) -> bool {
    name.strip_prefix(DISCRIMINATOR)
        .is_some_and(|rest| rest.starts_with('.'))
}

/// Whether a parameter name belongs to the generator.
pub fn is_generator(name: &str) -> bool {
    name.strip_prefix(GENERATOR)
        .is_some_and(|rest| rest.starts_with('.'))
}

/// The value of a scalar tensor, refusing NaN and infinity.
fn finite(t: &Tensor, what: &str) -> Result<f64> {
    let v = t.f_double_value(&[])?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(Error::NonFinite(format!("the {what} became {v}")))
    }
}

impl<R: RealData> GanObjective<'_, R> {
    /// The real items, latents and generated items of step `step` (the generated ones with their
    /// graph).
    fn draw(&mut self, step: u64) -> Result<(Tensor, Tensor, Tensor)> {
        let x = self.data.batch(step)?;
        tch::manual_seed(derived_seed(self.seed, Stream::Probe, step) as i64);
        let gan = self.losses.gan;
        let z = gan.latents(x.size()[0], x.kind(), x.device());
        let fake = gan.generator.forward_t(&z, true);
        Ok((x, z, fake))
    }

    /// The scalars logged with a step.
    fn metrics(d: &DiscriminatorSide, g_loss: f64, gan: &Gan, z: &Tensor) -> Vec<(String, f64)> {
        let mean = |t: &Tensor| t.mean(t.kind()).double_value(&[]);
        let mut m = vec![
            ("d_loss".to_string(), d.loss.double_value(&[])),
            ("g_loss".to_string(), g_loss),
            ("d_real".to_string(), mean(&d.real.score)),
            ("d_fake".to_string(), mean(&d.fake.score)),
        ];
        if let Some(p) = &d.penalty {
            m.push(("penalty".to_string(), p.double_value(&[])));
        }
        if gan.is_encoder() {
            let rho = tch::no_grad(|| mean(&row_correlation(z, &d.fake.code)));
            m.push(("rho".to_string(), rho));
        }
        m
    }

    /// The alternating update (module docs).
    fn alternating(&mut self, step: u64, optimizer: &mut Optimizer) -> Result<Update> {
        optimizer.zero_grad();
        let (x, z, fake) = self.draw(step)?;
        let d = self.losses.discriminator_side(&x, &fake.detach(), &z)?;
        let d_loss = finite(&d.loss, "discriminator loss")?;
        d.loss.f_backward()?;
        let d_report = optimizer.step_part(&is_discriminator)?;
        let real_score = d.real.score.detach();
        let g = self
            .losses
            .generator_side(&real_score, &self.losses.judge(&fake), &z);
        let g_loss = finite(&g, "generator loss")?;
        g.f_backward()?;
        let g_report = optimizer.step_part(&is_generator)?;
        optimizer.finish_step();
        Ok(Update {
            loss: d_loss,
            metrics: Self::metrics(&d, g_loss, self.losses.gan, &z),
            report: d_report.combine(g_report),
        })
    }
}

impl<R: RealData> Objective for GanObjective<'_, R> {
    /// The single loss of step `step` (its value is `L_D`'s).
    fn loss(&mut self, step: u64) -> Result<(Tensor, Vec<(String, f64)>)> {
        let (x, z, fake) = self.draw(step)?;
        let (loss, d, g) = self.losses.single_loss(&x, &fake, &z)?;
        let g_loss = finite(&g, "generator loss")?;
        let metrics = Self::metrics(&d, g_loss, self.losses.gan, &z);
        Ok((loss, metrics))
    }

    fn update(&mut self, step: u64, optimizer: &mut Optimizer) -> Result<Update> {
        match self.rule {
            UpdateRule::SingleLoss => loss_update(self, step, optimizer),
            UpdateRule::Alternating => self.alternating(step, optimizer),
        }
    }

    fn evaluate(&mut self, step: u64) -> Result<Option<Evaluation>> {
        self.data.evaluate(self.losses.gan, step)
    }
}
