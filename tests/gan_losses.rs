//! GAN losses in f64: the single loss through stop-gradient gives the discriminator and the
//! generator exactly the gradients of their separate losses and has the discriminator loss's
//! value (one test per loss, and O-GAN's); the loss formulas against their textbook forms; the
//! R1 and WGAN-GP penalties' parameter gradients (second-order autodiff) against central finite
//! differences; O-GAN's correlation against a direct Pearson computation.
mod common;

use common::{finite_difference, randn, seed_lock};
use genflow::gan::loss::{r1, row_correlation, standardize_rows, wgan_gp};
use genflow::gan::{
    ConvGanConfig, Gan, GanLoss, GanLosses, GanTrainConfig, GeneratorNorm, MlpGanConfig, Penalty,
    QpConfig, QpDistance,
};
use std::collections::BTreeMap;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// A small conv GAN (batch norm in both nets, self-modulated in G when `self_modulated`) on
/// 1x8x8 images, in f64.
fn conv_gan(encoder: bool, self_modulated: bool) -> (VarStore, Gan) {
    let mut vs = VarStore::new(Device::Cpu);
    let config = ConvGanConfig {
        image_shape: [1, 8, 8],
        z_dim: 4,
        width: 3,
        levels: 2,
        kernel: 4,
        generator_norm: if self_modulated {
            GeneratorNorm::SelfModulated
        } else {
            GeneratorNorm::Batch
        },
        discriminator_batch_norm: true,
        spectral_norm: false,
        encoder,
    };
    let gan = Gan::conv(&vs.root(), &config).unwrap();
    vs.double();
    (vs, gan)
}

/// The gradient of every trainable variable (zeros where none arrived), by name.
fn gradients(vs: &VarStore) -> BTreeMap<String, Tensor> {
    vs.variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(name, t)| {
            let g = t.grad();
            let g = if g.defined() {
                g.copy()
            } else {
                t.zeros_like()
            };
            (name, g)
        })
        .collect()
}

fn zero_grad(vs: &VarStore) {
    for (_, mut t) in vs.variables() {
        if t.requires_grad() {
            t.zero_grad();
        }
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Single loss vs separate losses on one fixed batch: D's gradients equal those of `L_D`, G's
/// those of `L_G`, and the single loss's value equals `L_D`'s (all in f64).
fn single_loss_matches(loss: GanLoss, encoder: bool, penalty: Option<Penalty>) {
    let _lock = seed_lock();
    tch::manual_seed(11);
    let (vs, gan) = conv_gan(encoder, encoder);
    let config = GanTrainConfig {
        loss,
        penalty,
        ..Default::default()
    };
    let losses = GanLosses::new(&gan, &config);
    let x = randn(&[6, 1, 8, 8], 3).tanh();
    let z = randn(&[6, 4], 4);

    // the alternating update's two losses, both at the same weights
    zero_grad(&vs);
    let fake = gan.generator.forward_t(&z, true);
    let d = losses.discriminator_side(&x, &fake.detach(), &z).unwrap();
    d.loss.backward();
    let d_grads = gradients(&vs);
    let d_value = d.loss.double_value(&[]);
    zero_grad(&vs);
    let fake = gan.generator.forward_t(&z, true);
    let g = losses.generator_side(&d.real.score.detach(), &losses.judge(&fake), &z);
    g.backward();
    let g_grads = gradients(&vs);

    // the single loss
    zero_grad(&vs);
    let fake = gan.generator.forward_t(&z, true);
    let (single, _, _) = losses.single_loss(&x, &fake, &z).unwrap();
    single.backward();
    let single_grads = gradients(&vs);

    // f64: the equal terms cancel to rounding of values of order 1
    let tol = 1e-12;
    let value = single.double_value(&[]);
    assert!((value - d_value).abs() < tol, "{value} vs L_D {d_value}");
    let (mut checked_d, mut checked_g) = (0, 0);
    for (name, grad) in &single_grads {
        let (want, which) = if name.starts_with("discriminator.") {
            checked_d += 1;
            (&d_grads[name], "L_D")
        } else {
            checked_g += 1;
            (&g_grads[name], "L_G")
        };
        let scale = want.abs().max().double_value(&[]).max(1e-3);
        let err = max_abs_diff(grad, want);
        assert!(
            err <= tol * scale.max(1.0),
            "{name}: single-loss gradient differs from {which}'s by {err:e} (scale {scale:e})"
        );
    }
    assert!(checked_d > 0 && checked_g > 0);
    // and the generator really learns from it (the bracket has a gradient)
    let g_norm: f64 = single_grads
        .iter()
        .filter(|(n, _)| n.starts_with("generator."))
        .map(|(_, g)| g.square().sum(Kind::Double).double_value(&[]))
        .sum();
    assert!(g_norm > 1e-12, "no gradient reached the generator");
}

#[test]
fn single_loss_matches_separate_losses_non_saturating() {
    single_loss_matches(GanLoss::NonSaturating, false, None);
}

#[test]
fn single_loss_matches_separate_losses_hinge() {
    single_loss_matches(GanLoss::Hinge, false, None);
}

#[test]
fn single_loss_matches_separate_losses_gan_qp() {
    let qp = QpConfig {
        lambda: 2.0,
        distance: QpDistance::L2,
    };
    single_loss_matches(GanLoss::GanQp(qp), false, None);
}

/// O-GAN's reference recipe (GAN-QP with the L2 distance, the correlation term, self-modulated
/// batch norm) with an R1 penalty on top: the single loss still splits exactly.
#[test]
fn single_loss_matches_separate_losses_ogan_with_r1() {
    let qp = QpConfig {
        lambda: 2.0,
        distance: QpDistance::L2,
    };
    single_loss_matches(GanLoss::GanQp(qp), true, Some(Penalty::R1 { gamma: 3.0 }));
}

/// The losses against their textbook forms on fixed scores: `-log sigmoid(d_r) - log(1 -
/// sigmoid(d_f))` and `-log sigmoid(d_f)` (non-saturating), hinge, and GAN-QP's `-T + T^2 / (2
/// lambda d)` with both distances.
#[test]
fn loss_values_match_their_formulas() {
    let d_r = [0.3f64, -1.2, 2.0, 0.0];
    let d_f = [-0.5f64, 0.7, 1.5, -2.5];
    let x_r = [[0.0f64, 1.0], [2.0, -1.0], [0.5, 0.5], [1.0, 1.0]];
    let x_f = [[1.0f64, 1.0], [0.0, 0.0], [0.5, -0.5], [-1.0, 2.0]];
    let t = |v: &[f64]| Tensor::from_slice(v);
    let flat = |v: &[[f64; 2]; 4]| t(&v.concat()).reshape([4, 2]);
    let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
    let mean = |f: &dyn Fn(usize) -> f64| (0..4).map(f).sum::<f64>() / 4.0;
    let cases: Vec<(GanLoss, f64, f64)> = vec![
        (
            GanLoss::NonSaturating,
            mean(&|i| -sigmoid(d_r[i]).ln() - (1.0 - sigmoid(d_f[i])).ln()),
            mean(&|i| -sigmoid(d_f[i]).ln()),
        ),
        (
            GanLoss::Hinge,
            mean(&|i| (1.0 - d_r[i]).max(0.0) + (1.0 + d_f[i]).max(0.0)),
            mean(&|i| -d_f[i]),
        ),
        (
            GanLoss::GanQp(QpConfig {
                lambda: 10.0,
                distance: QpDistance::L1,
            }),
            mean(&|i| {
                let tt = d_r[i] - d_f[i];
                let d = ((x_r[i][0] - x_f[i][0]).abs() + (x_r[i][1] - x_f[i][1]).abs()) / 2.0;
                -tt + tt * tt / (2.0 * 10.0 * d)
            }),
            mean(&|i| d_r[i] - d_f[i]),
        ),
        (
            GanLoss::GanQp(QpConfig {
                lambda: 2.0,
                distance: QpDistance::L2,
            }),
            mean(&|i| {
                let tt = d_r[i] - d_f[i];
                let d = ((x_r[i][0] - x_f[i][0]).powi(2) + (x_r[i][1] - x_f[i][1]).powi(2)) / 2.0;
                // the O-GAN reference's 0.25 t^2 / mean((x - G(z))^2)
                -tt + 0.25 * tt * tt / d
            }),
            mean(&|i| d_r[i] - d_f[i]),
        ),
    ];
    for (loss, want_d, want_g) in cases {
        let got_d = loss
            .discriminator(&t(&d_r), &t(&d_f), &flat(&x_r), &flat(&x_f))
            .double_value(&[]);
        let got_g = loss.generator(&t(&d_r), &t(&d_f)).double_value(&[]);
        assert!(
            (got_d - want_d).abs() < 1e-12,
            "{loss:?}: L_D {got_d} vs {want_d}"
        );
        assert!(
            (got_g - want_g).abs() < 1e-12,
            "{loss:?}: L_G {got_g} vs {want_g}"
        );
    }
}

/// An MLP discriminator `2 -> 16 -> 16 -> 1` in f64.
fn mlp_gan(spectral_norm: bool) -> (VarStore, Gan) {
    let mut vs = VarStore::new(Device::Cpu);
    let config = MlpGanConfig {
        z_dim: 3,
        hidden: vec![16, 16],
        generator_norm: GeneratorNorm::None,
        spectral_norm,
        encoder: false,
    };
    let gan = Gan::mlp(&vs.root(), &config, 2).unwrap();
    vs.double();
    (vs, gan)
}

/// The gradient of `penalty()` with respect to every discriminator parameter (by autograd through
/// the penalty's own gradient) against central differences, `h = 1e-6` in f64.
fn check_penalty_gradient(vs: &VarStore, penalty: &dyn Fn() -> Tensor, what: &str) {
    zero_grad(vs);
    penalty().backward();
    let grads = gradients(vs);
    let mut checked = 0;
    for (name, param) in vs.variables() {
        if !name.starts_with("discriminator.") || !param.requires_grad() {
            continue;
        }
        let n = param.numel() as i64;
        // a few entries of every tensor
        for index in [0, n / 2, n - 1] {
            let numeric =
                finite_difference(&mut || penalty().double_value(&[]), &param, index, 1e-6);
            let analytic = grads[&name].view([-1]).double_value(&[index]);
            // central differences err by O(h^2) plus rounding of O(eps / h)
            let tol = 1e-6 * (1.0 + analytic.abs());
            assert!(
                (numeric - analytic).abs() < tol,
                "{what}: d/d {name}[{index}]: autograd {analytic} vs finite difference {numeric}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 9, "{what}: checked {checked} entries");
}

#[test]
fn r1_gradient_matches_finite_differences() {
    let _lock = seed_lock();
    tch::manual_seed(5);
    let (vs, gan) = mlp_gan(false);
    let x = randn(&[8, 2], 6);
    let penalty = || {
        let x = x.detach().set_requires_grad(true);
        let scores = gan.discriminator.forward_t(&x, true).squeeze_dim(1);
        r1(&scores, &x, 10.0).unwrap()
    };
    check_penalty_gradient(&vs, &penalty, "R1 (MLP)");

    // through conv, batch norm and the mean score of an O-GAN encoder
    tch::manual_seed(7);
    let (vs, gan) = conv_gan(true, false);
    let x = randn(&[4, 1, 8, 8], 8).tanh();
    let penalty = || {
        let x = x.detach().set_requires_grad(true);
        let code = gan.discriminator.forward_t(&x, true);
        r1(&code.mean_dim(1, false, Kind::Double), &x, 1.0).unwrap()
    };
    check_penalty_gradient(&vs, &penalty, "R1 (conv, batch norm, encoder)");
}

#[test]
fn wgan_gp_gradient_matches_finite_differences() {
    let _lock = seed_lock();
    tch::manual_seed(9);
    let (vs, gan) = mlp_gan(false);
    let real = randn(&[8, 2], 10);
    let fake = randn(&[8, 2], 12);
    let eps = randn(&[8, 1], 13).sigmoid();
    let x_hat = &fake + &eps * (&real - &fake);
    let penalty = || {
        let x = x_hat.detach().set_requires_grad(true);
        let scores = gan.discriminator.forward_t(&x, true).squeeze_dim(1);
        wgan_gp(&scores, &x, 10.0).unwrap()
    };
    check_penalty_gradient(&vs, &penalty, "WGAN-GP");
}

/// The penalties' values against the gradient of a discriminator known in closed form: for
/// `D(x) = w . x` the input gradient is `w` everywhere.
#[test]
fn penalty_values_on_a_linear_discriminator() {
    let w = Tensor::from_slice(&[3.0f64, -4.0]); // |w| = 5
    let x = randn(&[5, 2], 1).set_requires_grad(true);
    let scores = x.matmul(&w);
    let got = r1(&scores, &x, 2.0).unwrap().double_value(&[]);
    assert!((got - 25.0).abs() < 1e-12, "R1 {got}");
    let got = wgan_gp(&scores, &x, 10.0).unwrap().double_value(&[]);
    assert!((got - 160.0).abs() < 1e-10, "WGAN-GP {got}");
}

/// `rho` against Pearson's formula `cov(a, b) / (std(a) std(b))` row by row, and `N(e)` has mean 0
/// and standard deviation 1 per row.
#[test]
fn correlation_is_pearson_per_row() {
    let a = randn(&[4, 7], 21);
    let b = &a * 0.5 + randn(&[4, 7], 22);
    let rho = row_correlation(&a, &b);
    for i in 0..4 {
        let ra = Vec::<f64>::try_from(a.get(i)).unwrap();
        let rb = Vec::<f64>::try_from(b.get(i)).unwrap();
        let (ma, mb) = (ra.iter().sum::<f64>() / 7.0, rb.iter().sum::<f64>() / 7.0);
        let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
        let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
        let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
        let want = cov / (va * vb).sqrt();
        let got = rho.double_value(&[i]);
        assert!((got - want).abs() < 1e-12, "row {i}: {got} vs {want}");
    }
    let n = standardize_rows(&b);
    let mean = n
        .mean_dim(1, false, Kind::Double)
        .abs()
        .max()
        .double_value(&[]);
    let std = n.square().mean_dim(1, false, Kind::Double).sqrt();
    assert!(mean < 1e-12 && max_abs_diff(&std, &std.ones_like()) < 1e-12);
    // a code that is an affine image of z correlates perfectly
    let z = randn(&[3, 5], 30);
    let rho = row_correlation(&z, &(&z * 2.5 + 1.0));
    assert!(max_abs_diff(&rho, &rho.ones_like()) < 1e-12);
}
