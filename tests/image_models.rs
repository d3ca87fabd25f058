//! The image density model and the classifier: bits/dim against hand computations, sampling,
//! reconstruction, logits and invertible features, configuration checks and parameter names.
mod common;

use common::{randn, seed_lock};
use genflow::distributions::BaseKind;
use genflow::flows::FlowContext;
use genflow::flows::LayerConfig;
use genflow::linalg::logdet::{per_sample_sum, LogDetEstimator};
use genflow::metrics::bits_per_dim;
use genflow::models::{ClassifierConfig, IResNetClassifier, ImageFlow, ImageFlowConfig};
use genflow::nn::{assign, ActivationKind};
use tch::{nn::VarStore, Device, Kind, Tensor};

/// `ln(2 pi) / 2`.
const HALF_LN_2PI: f64 = 0.918_938_533_204_672_7;

/// Tiny tensors: one intra-op thread is fastest, and avoids spinning on a loaded machine.
fn setup() -> std::sync::MutexGuard<'static, ()> {
    let guard = seed_lock();
    tch::set_num_threads(1);
    guard
}

fn exact_ctx() -> FlowContext {
    FlowContext::eval(LogDetEstimator::Exact, 0)
}

fn tiny_config() -> ImageFlowConfig {
    ImageFlowConfig {
        in_shape: [1, 4, 4],
        scales: vec![1, 1],
        hidden: 4,
        factor_out: true,
        actnorm: false,
        ..ImageFlowConfig::default()
    }
}

/// A model whose blocks are the identity: the last conv of every `g` is zeroed, so `g = 0`.
fn identity_model(vs: &mut VarStore, config: &ImageFlowConfig) -> ImageFlow {
    let model = ImageFlow::new(&vs.root(), config).unwrap();
    vs.set_kind(Kind::Double);
    for g in model.residual_nets() {
        let last = g.linear_layers().last().unwrap();
        assign(&last.weight, &last.weight.zeros_like());
        assign(&last.bias, &last.bias.zeros_like());
    }
    model
}

#[test]
fn bits_per_dim_of_an_identity_model_matches_a_hand_computation() {
    let _guard = setup();
    tch::manual_seed(0);
    let mut vs = VarStore::new(Device::Cpu);
    let model = identity_model(&mut vs, &tiny_config());
    // -log p = D (1/8 + ln(2 pi)/2) for x = 1/2 everywhere; (that / D + ln 256) / ln 2, by hand
    // (python: (0.125 + 0.5*log(2*pi) + log(256)) / log(2))
    let half = Tensor::full([2, 1, 4, 4], 0.5, (Kind::Double, Device::Cpu));
    let bpd = model
        .bits_per_dim_dequantized(&half, &mut exact_ctx())
        .unwrap();
    let err = (bpd - 9.50608494484728).abs().max().double_value(&[]);
    assert!(err < 1e-12, "bits/dim error {err}");

    // integer images: the same formula at (x + u) / 256, with u drawn from the same seed
    let pixels = Tensor::randint(256, [3, 1, 4, 4], (Kind::Uint8, Device::Cpu));
    tch::manual_seed(5);
    let u = Tensor::rand([3, 1, 4, 4], (Kind::Double, Device::Cpu));
    let scaled = (pixels.to_kind(Kind::Double) + u) / 256.0;
    let nll = per_sample_sum(&(scaled.square() * 0.5 + HALF_LN_2PI));
    let want = (nll / 16.0 + 256f64.ln()) / 2f64.ln();
    tch::manual_seed(5);
    let got = model.bits_per_dim(&pixels, &mut exact_ctx()).unwrap();
    let err = (got - want).abs().max().double_value(&[]);
    assert!(err < 1e-12, "dequantised bits/dim error {err}");
    assert!(
        model.bits_per_dim(&scaled, &mut exact_ctx()).is_err(),
        "scaled data as levels"
    );
    assert!(
        model
            .bits_per_dim_dequantized(&(scaled * 256.0), &mut exact_ctx())
            .is_err(),
        "levels as scaled data"
    );
}

#[test]
fn bits_per_dim_with_the_logit_transform_matches_a_hand_computation() {
    let _guard = setup();
    tch::manual_seed(1);
    let alpha = 0.05;
    let mut vs = VarStore::new(Device::Cpu);
    let config = ImageFlowConfig {
        logit_alpha: Some(alpha),
        base: BaseKind::DiagonalGaussian,
        ..tiny_config()
    };
    let model = identity_model(&mut vs, &config);
    let x = randn(&[4, 1, 4, 4], 2).sigmoid();
    // z = logit(p), p = alpha + (1 - 2 alpha) x; log p(x) = log N(z) + sum ln((1 - 2 alpha) / (p (1 - p)))
    let p = &x * (1.0 - 2.0 * alpha) + alpha;
    let z = p.log() - (-&p + 1.0).log();
    let log_jac = ((-&p + 1.0) * &p).reciprocal().log() + (1.0 - 2.0 * alpha).ln();
    let log_prob = per_sample_sum(&(log_jac - z.square() * 0.5 - HALF_LN_2PI));
    let want = (-log_prob / 16.0 + 256f64.ln()) / std::f64::consts::LN_2;
    let got = model
        .bits_per_dim_dequantized(&x, &mut exact_ctx())
        .unwrap();
    let err = (&got - &want).abs().max().double_value(&[]);
    assert!(err < 1e-12, "bits/dim error {err}");
    let metric = bits_per_dim(&model.log_prob(&x, &mut exact_ctx()).unwrap(), 16, 256);
    assert!(metric.allclose(&got, 0.0, 1e-14, false));
}

/// A model with active spectral normalisation and ActNorms initialised on data, in f32.
fn trained_looking_model(vs: &VarStore, config: &ImageFlowConfig, data: &Tensor) -> ImageFlow {
    let model = ImageFlow::new(&vs.root(), config).unwrap();
    tch::no_grad(|| {
        for mut w in vs.trainable_variables() {
            if w.dim() == 4 {
                let _ = w.g_mul_scalar_(3.0);
            }
        }
    });
    let mut train = FlowContext::train(LogDetEstimator::default(), 0);
    let _ = model.log_prob(data, &mut train).unwrap();
    for g in model.residual_nets() {
        g.refine_spectral_norms(1e-6, 500);
    }
    model
}

fn rgb_config() -> ImageFlowConfig {
    ImageFlowConfig {
        in_shape: [3, 8, 8],
        scales: vec![2, 2],
        hidden: 16,
        logit_alpha: Some(0.05),
        ..ImageFlowConfig::default()
    }
}

#[test]
fn reconstruction_error_is_small_in_f32() {
    let _guard = setup();
    tch::manual_seed(3);
    let data = Tensor::rand([16, 3, 8, 8], (Kind::Float, Device::Cpu));
    // with and without factor-out, and with matrix-exponential 1x1 convs between the blocks
    let variants = [
        (false, None),
        (true, None),
        (true, Some("matrix_exp")),
        (false, Some("rank_one_exp")),
    ];
    for (factor_out, mixing) in variants {
        let vs = VarStore::new(Device::Cpu);
        let config = ImageFlowConfig {
            factor_out,
            mixing: mixing.map(|name| LayerConfig::with_defaults(name).unwrap()),
            ..rgb_config()
        };
        let model = trained_looking_model(&vs, &config, &data);
        let x = Tensor::rand([8, 3, 8, 8], (Kind::Float, Device::Cpu));
        let mut ctx = FlowContext::eval(LogDetEstimator::default(), 0);
        let (x_hat, err) = model.reconstruct(&x, &mut ctx).unwrap();
        assert_eq!(x_hat.size(), x.size());
        // fixed-point inversion to atol = rtol = 1e-5 with L <= 0.9^3 per block, then the logit's
        // sigmoid (derivative <= 1/4): errors of order 1e-5 at most
        assert!(
            err < 1e-4,
            "factor_out {factor_out}, {mixing:?}: reconstruction error {err:e}"
        );
        assert!(
            ctx.inverse_stats.max_residual < 1.0,
            "{:?}",
            ctx.inverse_stats
        );
    }
}

#[test]
fn samples_have_finite_log_prob() {
    let _guard = setup();
    tch::manual_seed(4);
    let vs = VarStore::new(Device::Cpu);
    let data = Tensor::rand([16, 3, 8, 8], (Kind::Float, Device::Cpu));
    let config = ImageFlowConfig {
        factor_out: true,
        ..rgb_config()
    };
    let model = trained_looking_model(&vs, &config, &data);
    let mut ctx = FlowContext::eval(LogDetEstimator::default(), 0);
    for temperature in [1.0, 0.5] {
        let samples = model.sample(6, temperature, &mut ctx).unwrap();
        assert_eq!(samples.size(), [6, 3, 8, 8]);
        // the logit's inverse is a sigmoid: samples lie in [0, 1] (up to alpha)
        let (lo, hi) = (
            samples.min().double_value(&[]),
            samples.max().double_value(&[]),
        );
        assert!(lo >= -0.06 && hi <= 1.06, "samples in [{lo}, {hi}]");
        let clamped = samples.clamp(0.0, 1.0);
        let log_prob = model.log_prob(&clamped, &mut ctx).unwrap();
        assert_eq!(log_prob.size(), [6]);
        assert!(
            bool::try_from(log_prob.isfinite().all()).unwrap(),
            "log p = {log_prob:?}"
        );
    }
    assert!(model.sample(0, 1.0, &mut ctx).is_err());
    assert!(model.sample(2, f64::NAN, &mut ctx).is_err());
}

#[test]
fn parameters_have_stable_names() {
    let _guard = setup();
    let vs = VarStore::new(Device::Cpu);
    let config = ImageFlowConfig {
        actnorm: true,
        base: BaseKind::DiagonalGaussian,
        ..tiny_config()
    };
    let _model = ImageFlow::new(&vs.root(), &config).unwrap();
    let names: Vec<String> = vs.variables().into_keys().collect();
    for name in [
        "scales.0.actnorms.0.bias",
        "scales.0.actnorms.0.log_scale",
        "scales.1.actnorms.0.initialized",
        "scales.0.blocks.0.g.0.beta",
        "scales.0.blocks.0.g.1.weight",
        "scales.0.blocks.0.g.1.u",
        "scales.1.blocks.0.g.5.bias",
        "scales.1.blocks.0.g.5.sigma",
        "base.mean",
        "base.log_std",
    ] {
        assert!(
            names.iter().any(|n| n == name),
            "{name} missing from {names:?}"
        );
    }
}

#[test]
fn configurations_are_validated() {
    let _guard = setup();
    let parsed: ImageFlowConfig =
        toml::from_str("in_shape = [3, 32, 32]\nscales = [16, 16, 16]").unwrap();
    assert_eq!(parsed.kernels, [3, 1, 3]);
    assert_eq!(parsed.levels, 256);
    assert!(
        toml::from_str::<ImageFlowConfig>("scale = [4]").is_err(),
        "unknown field"
    );
    assert!(
        toml::from_str::<ClassifierConfig>("pad = 13").is_err(),
        "unknown field"
    );
    let vs = VarStore::new(Device::Cpu);
    let bad = [
        ImageFlowConfig {
            scales: vec![],
            ..tiny_config()
        },
        ImageFlowConfig {
            scales: vec![1, 0],
            ..tiny_config()
        },
        ImageFlowConfig {
            in_shape: [1, 6, 6],
            scales: vec![1, 1, 1],
            ..tiny_config()
        },
        ImageFlowConfig {
            activation: ActivationKind::Relu,
            ..tiny_config()
        },
        ImageFlowConfig {
            logit_alpha: Some(0.5),
            ..tiny_config()
        },
        ImageFlowConfig {
            kernels: vec![2],
            ..tiny_config()
        },
    ];
    for config in bad {
        assert!(
            ImageFlow::new(&vs.root(), &config).is_err(),
            "accepted {config:?}"
        );
    }
    let classifier = ClassifierConfig {
        hidden: vec![8],
        stages: vec![1, 1],
        ..ClassifierConfig::default()
    };
    assert!(IResNetClassifier::new(&vs.root(), &classifier).is_err());
}

fn small_classifier_config() -> ClassifierConfig {
    ClassifierConfig {
        in_shape: [3, 8, 8],
        num_classes: 10,
        pad_channels: 5,
        stages: vec![2, 1],
        hidden: vec![8, 16],
        ..ClassifierConfig::default()
    }
}

#[test]
fn classifier_gives_logits_and_invertible_features() {
    let _guard = setup();
    for actnorm in [true, false] {
        check_classifier(ClassifierConfig {
            actnorm,
            ..small_classifier_config()
        });
    }
}

fn check_classifier(config: ClassifierConfig) {
    tch::manual_seed(6);
    let vs = VarStore::new(Device::Cpu);
    let net = IResNetClassifier::new(&vs.root(), &config).unwrap();
    tch::no_grad(|| {
        for mut w in vs.trainable_variables() {
            if w.dim() == 4 {
                let _ = w.g_mul_scalar_(3.0);
            }
        }
    });
    let x = Tensor::randn([8, 3, 8, 8], (Kind::Float, Device::Cpu));
    let logits = net.forward_t(&x, true).unwrap();
    assert_eq!(logits.size(), [8, 10]);
    // the loss reaches the blocks and the head
    logits
        .cross_entropy_for_logits(&Tensor::zeros([8], (Kind::Int64, Device::Cpu)))
        .backward();
    for (name, p) in vs.variables() {
        if p.requires_grad() && (name.ends_with("weight") || name.ends_with("log_scale")) {
            assert!(
                p.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0,
                "actnorm {}: {name} gets no gradient",
                config.actnorm
            );
        }
    }
    for g in net.residual_nets() {
        g.refine_spectral_norms(1e-6, 500);
    }
    assert_eq!(net.forward_t(&x, false).unwrap().size(), [8, 10]);
    let features = net.features(&x, false).unwrap();
    assert_eq!(
        features.size(),
        [8, 32, 4, 4],
        "padding 3 -> 8 channels, one squeeze"
    );
    let mut ctx = FlowContext::eval(LogDetEstimator::Exact, 0);
    let back = net.invert_features(&features, &mut ctx).unwrap();
    let err = (back - &x).abs().max().double_value(&[]);
    // fixed-point inversions to atol = rtol = 1e-5 on inputs of size about 3
    assert!(
        err < 1e-4,
        "actnorm {}: feature inversion error {err:e}",
        config.actnorm
    );
    assert!(
        ctx.inverse_stats.max_residual < 1.0,
        "{:?}",
        ctx.inverse_stats
    );
    // features off the image of the map come back with non-zero padding and are rejected. (With
    // ActNorm, the first one's data-dependent init scales the all-zero padded channels by
    // 1/(0 + 1e-6), so its inverse shrinks anything there by 1e-6 and the check cannot see it.)
    if config.actnorm {
        return;
    }
    let off = &features + Tensor::randn([8, 32, 4, 4], (Kind::Float, Device::Cpu)) * 0.5;
    assert!(net.invert_features(&off, &mut ctx).is_err());
}

/// The head's BatchNorm tracks the current network closely (momentum 0.9, as the official code):
/// after one training-mode pass from the initial statistics (mean 0, variance 1) the running
/// statistics are `0.1 * initial + 0.9 * batch`, and evaluation mode then normalises with them.
#[test]
fn classifier_head_statistics_follow_the_last_batch() {
    let _guard = setup();
    tch::manual_seed(8);
    let vs = VarStore::new(Device::Cpu);
    let config = ClassifierConfig {
        actnorm: false,
        ..small_classifier_config()
    };
    let net = IResNetClassifier::new(&vs.root(), &config).unwrap();
    // inputs with mean 3, so that the feature means are far from the initial running mean 0
    let x = Tensor::randn([16, 3, 8, 8], (Kind::Float, Device::Cpu)) + 3.0;
    let _logits = tch::no_grad(|| net.forward_t(&x, true)).unwrap();
    let features = tch::no_grad(|| net.features(&x, false)).unwrap();
    let dims = [0i64, 2, 3];
    let mean = features.mean_dim(dims.as_slice(), false, Kind::Float);
    let var = features.var_dim(dims.as_slice(), true, false);
    let vars = vs.variables();
    let m = genflow::models::classifier::HEAD_NORM_MOMENTUM;
    let expected_mean = &mean * m;
    let expected_var = &var * m + (1.0 - m);
    let err_mean = (&vars["head.norm.running_mean"] - expected_mean)
        .abs()
        .max()
        .double_value(&[]);
    let err_var = (&vars["head.norm.running_var"] - expected_var)
        .abs()
        .max()
        .double_value(&[]);
    // evaluation mode uses the spectral norms the training pass stored: the same features
    assert!(mean.abs().max().double_value(&[]) > 1.0);
    assert!(err_mean < 1e-4, "running mean off by {err_mean}");
    assert!(err_var < 1e-3, "running variance off by {err_var}");
}
