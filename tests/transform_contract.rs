//! One contract, run over every transform of genflow (in f64, at small sizes so that full Jacobians
//! are cheap):
//!
//! 1. shapes: `forward` gives the documented output shape and a log-det of shape `[batch]`;
//! 2. inverse round trip: `inverse(forward(x)) = x` to 1e-8 (i-ResNet blocks inverted with
//!    atol = rtol = 1e-12, so the fixed-point error `L/(1-L) * 1e-12 * |y|` is far below that);
//! 3. log-det: equals `ln|det J|` of the Jacobian of `forward` built by autograd, per sample, to 1e-8
//!    (both are exact in f64; they differ by rounding, about 1e-12);
//! 4. gradients: after `backward` of a loss depending on the output and the log-det, every trainable
//!    parameter (and the input) has a nonzero gradient.
//!
//! To add a transform: write a `fn case_...() -> Case` below and list it in [`cases`].
mod common;

use common::{autograd_jacobian, logabsdet, randn, seed_lock};
use genflow::flows::{
    ActNorm, Dequantize, FlowContext, IResBlock, LogitTransform, MatrixExpConfig, MatrixExpConv1x1,
    MultiScale, RankOneExp, RankOneExpConfig, Sequential, Squeeze, Transform,
};
use genflow::linalg::logdet::LogDetEstimator;
use genflow::models::{ImageFlow, ImageFlowConfig};
use genflow::nn::{assign, ActivationKind, ConvShape, ResidualNet, SpectralConfig};
use tch::{nn::VarStore, Device, Kind, Tensor};

/// One transform with the store holding its parameters and an input to test it at.
struct Case {
    name: &'static str,
    vs: VarStore,
    transform: Box<dyn Transform>,
    x: Tensor,
    out_shape: Vec<i64>,
}

fn f64_store() -> VarStore {
    let mut vs = VarStore::new(Device::Cpu);
    vs.set_kind(Kind::Double);
    vs
}

/// An exact-log-det evaluation context with a tight inversion.
fn ctx() -> FlowContext {
    let mut ctx = FlowContext::eval(LogDetEstimator::Exact, 0);
    ctx.inverse.atol = 1e-12;
    ctx.inverse.rtol = 1e-12;
    ctx.inverse.max_iter = 1000;
    ctx
}

/// Makes every weight matrix / kernel 3x larger so the spectral normalisation is active, runs one
/// training pass on `x` (ActNorm data-dependent initialisation), then settles the power iterations
/// a little (evaluation uses the stored vectors, so it is deterministic whatever their accuracy).
fn settle(vs: &VarStore, t: &dyn Transform, x: &Tensor) {
    tch::no_grad(|| {
        for mut w in vs.trainable_variables() {
            if w.dim() >= 2 {
                let _ = w.g_mul_scalar_(3.0);
            }
        }
    });
    let mut train = FlowContext::train(LogDetEstimator::Exact, 0);
    let _ = t.forward(x, &mut train).unwrap();
    for g in t.residual_nets() {
        g.refine_spectral_norms(1e-6, 200);
    }
}

fn case(
    name: &'static str,
    mut vs: VarStore,
    transform: Box<dyn Transform>,
    x: Tensor,
    out_shape: &[i64],
) -> Case {
    // buffers (`zeros_no_train`) are created in f32 whatever the store's kind: convert after building
    vs.set_kind(Kind::Double);
    settle(&vs, transform.as_ref(), &x);
    Case {
        name,
        vs,
        transform,
        x,
        out_shape: out_shape.to_vec(),
    }
}

fn spectral() -> SpectralConfig {
    SpectralConfig {
        coeff: 0.9,
        n_power_iter: 5,
    }
}

fn case_iresblock_dense() -> Case {
    let vs = f64_store();
    let g = ResidualNet::mlp(
        &(vs.root() / "g"),
        &[4, 16, 16, 4],
        ActivationKind::Lipswish,
        spectral(),
        false,
    )
    .unwrap();
    case(
        "iresblock_dense",
        vs,
        Box::new(IResBlock::new(g)),
        randn(&[3, 4], 1),
        &[3, 4],
    )
}

fn conv_shape(channels: i64, hw: i64) -> ConvShape {
    ConvShape {
        channels,
        hidden: 4,
        kernels: vec![3, 1, 3],
        hw: (hw, hw),
    }
}

fn case_iresblock_conv() -> Case {
    let vs = f64_store();
    let g = ResidualNet::conv(
        &(vs.root() / "g"),
        &conv_shape(2, 4),
        ActivationKind::Elu,
        spectral(),
        true,
    )
    .unwrap();
    case(
        "iresblock_conv",
        vs,
        Box::new(IResBlock::new(g)),
        randn(&[2, 2, 4, 4], 2),
        &[2, 2, 4, 4],
    )
}

fn case_actnorm() -> Case {
    let vs = f64_store();
    let an = ActNorm::new(&vs.root(), 2);
    // mark it initialised with random statistics (settle's training pass then keeps them)
    let x = randn(&[2, 2, 4, 4], 3);
    let mut init = FlowContext::train(LogDetEstimator::Exact, 0);
    let _ = an.forward(&(&x * 2.0 + 0.5), &mut init).unwrap();
    assign(&an.bias, &(&an.bias + randn(&[2], 4) * 0.3));
    case("actnorm", vs, Box::new(an), x, &[2, 2, 4, 4])
}

fn case_squeeze() -> Case {
    case(
        "squeeze",
        f64_store(),
        Box::new(Squeeze),
        randn(&[2, 2, 4, 4], 5),
        &[2, 8, 2, 2],
    )
}

fn case_logit() -> Case {
    let x = (randn(&[2, 2, 4, 4], 6).sigmoid() * 0.98) + 0.01;
    case(
        "logit",
        f64_store(),
        Box::new(LogitTransform::new(0.05).unwrap()),
        x,
        &[2, 2, 4, 4],
    )
}

fn case_dequantize() -> Case {
    tch::manual_seed(7);
    let x = Tensor::randint(256, [2, 1, 4, 4], (Kind::Double, Device::Cpu));
    case(
        "dequantize",
        f64_store(),
        Box::new(Dequantize::new(256).unwrap()),
        x,
        &[2, 1, 4, 4],
    )
}

fn case_multiscale() -> Case {
    let vs = f64_store();
    let shapes = MultiScale::level_shapes([2, 4, 4], 2, true).unwrap();
    let levels = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let p = vs.root() / i;
            let mut level = Sequential::new();
            level.push(ActNorm::new(&(&p / "actnorm"), s[0]));
            let g = ResidualNet::conv(
                &(&p / "g"),
                &conv_shape(s[0], s[1]),
                ActivationKind::Lipswish,
                spectral(),
                true,
            );
            level.push(IResBlock::new(g.unwrap()));
            Box::new(level) as Box<dyn Transform>
        })
        .collect();
    let ms = MultiScale::new([2, 4, 4], levels, true).unwrap();
    case(
        "multiscale_factor_out",
        vs,
        Box::new(ms),
        randn(&[2, 2, 4, 4], 8),
        &[2, 32],
    )
}

fn case_image_flow() -> Case {
    let vs = f64_store();
    let config = ImageFlowConfig {
        in_shape: [1, 4, 4],
        scales: vec![1, 1],
        hidden: 4,
        factor_out: true,
        logit_alpha: Some(0.05),
        ..ImageFlowConfig::default()
    };
    let model = ImageFlow::new(&vs.root(), &config).unwrap();
    let x = randn(&[2, 1, 4, 4], 9).sigmoid();
    case(
        "image_flow",
        vs,
        Box::new(model.flow.transform),
        x,
        &[2, 16],
    )
}

/// Every transform under contract.
fn cases() -> Vec<Case> {
    tch::manual_seed(0);
    vec![
        case_iresblock_dense(),
        case_iresblock_conv(),
        case_actnorm(),
        case_squeeze(),
        case_logit(),
        case_dequantize(),
        case_multiscale(),
        case_image_flow(),
        case_rank_one_exp(&[3, 5]),
        case_rank_one_exp(&[2, 3, 4, 4]),
        case_matrix_exp(&[3, 5]),
        case_matrix_exp(&[2, 3, 4, 4]),
    ]
}

/// `RankOneExp` over the channels of a dense (`[B, C]`) or image (`[B, C, H, W]`) input.
fn case_rank_one_exp(shape: &[i64]) -> Case {
    let vs = f64_store();
    let layer = RankOneExp::new(&vs.root(), shape[1], RankOneExpConfig::default()).unwrap();
    let name = if shape.len() == 2 {
        "rank_one_exp_dense"
    } else {
        "rank_one_exp_conv"
    };
    case(name, vs, Box::new(layer), randn(shape, 10), shape)
}

/// `MatrixExpConv1x1` over the channels of a dense or image input.
fn case_matrix_exp(shape: &[i64]) -> Case {
    let vs = f64_store();
    let layer = MatrixExpConv1x1::new(&vs.root(), shape[1], MatrixExpConfig::default()).unwrap();
    let name = if shape.len() == 2 {
        "matrix_exp_dense"
    } else {
        "matrix_exp_conv"
    };
    case(name, vs, Box::new(layer), randn(shape, 11), shape)
}

fn check_shapes(c: &Case) {
    let (y, ld) = c.transform.forward(&c.x, &mut ctx()).unwrap();
    assert_eq!(y.size(), c.out_shape, "{}: output shape", c.name);
    assert_eq!(ld.size(), [c.x.size()[0]], "{}: log-det shape", c.name);
    assert_eq!(y.kind(), Kind::Double, "{}: dtype", c.name);
}

fn check_inverse(c: &Case) {
    let mut ctx = ctx();
    let (y, _) = c.transform.forward(&c.x, &mut ctx).unwrap();
    let back = c.transform.inverse(&y, &mut ctx).unwrap();
    assert_eq!(back.size(), c.x.size(), "{}: inverse shape", c.name);
    let err = (back - &c.x).abs().max().double_value(&[]);
    assert!(err < 1e-8, "{}: round-trip error {err:e}", c.name);
    assert!(
        ctx.inverse_stats.max_residual < 1.0,
        "{}: {:?}",
        c.name,
        ctx.inverse_stats
    );
}

fn check_logdet(c: &Case) {
    let (_, ld) = c.transform.forward(&c.x, &mut ctx()).unwrap();
    for i in 0..c.x.size()[0] {
        let xi = c.x.narrow(0, i, 1);
        let jac = autograd_jacobian(&|z| c.transform.forward(z, &mut ctx()).unwrap().0, &xi);
        let want = logabsdet(&jac);
        let got = ld.double_value(&[i]);
        assert!(
            (got - want).abs() < 1e-8 * (1.0 + want.abs()),
            "{} sample {i}: log-det {got} vs {want}",
            c.name
        );
    }
}

fn check_gradients(c: &Case) {
    let x = c.x.detach().set_requires_grad(true);
    let (y, ld) = c.transform.forward(&x, &mut ctx()).unwrap();
    let weights = randn(&y.size(), 10);
    let loss = (&y * weights).sum(Kind::Double) + ld.sum(Kind::Double);
    loss.backward();
    let grad_norm = |t: &Tensor| {
        let g = t.grad();
        if g.defined() {
            g.abs().sum(Kind::Double).double_value(&[])
        } else {
            0.0
        }
    };
    assert!(
        grad_norm(&x) > 0.0,
        "{}: no gradient reaches the input",
        c.name
    );
    for (name, p) in c.vs.variables() {
        if p.requires_grad() {
            assert!(
                grad_norm(&p) > 0.0,
                "{}: parameter {name} gets no gradient",
                c.name
            );
        }
    }
}

/// The contract, run over every case (built once: settling the spectral norms is the slow part).
#[test]
fn every_transform_satisfies_the_contract() {
    let _guard = seed_lock();
    // tiny tensors: one intra-op thread is fastest, and avoids spinning on a loaded machine
    tch::set_num_threads(1);
    for c in cases() {
        check_shapes(&c);
        check_inverse(&c);
        check_logdet(&c);
        check_gradients(&c);
    }
}
