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
//! The cases are every example of every layer in the registry ([`LayerConfig::examples`]), so a
//! layer is under contract the moment it is registered, plus the transforms of whole models.
//! Injective layers that are not onto (their Jacobian is not square) are checked for a zero
//! log-det and a full-rank Jacobian instead of point 3.
mod common;

use common::{autograd_jacobian, logabsdet, randn, seed_lock};
use genflow::flows::{build_stack, Domain, FlowContext, LayerConfig, LayerExample, Transform};
use genflow::linalg::logdet::LogDetEstimator;
use genflow::models::{ImageFlow, ImageFlowConfig};
use tch::{nn::VarStore, Device, Kind, Tensor};

/// One transform with the store holding its parameters and an input to test it at.
struct Case {
    name: String,
    vs: VarStore,
    transform: Box<dyn Transform>,
    x: Tensor,
    out_shape: Vec<i64>,
    bijective: bool,
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
    name: String,
    mut vs: VarStore,
    transform: Box<dyn Transform>,
    x: Tensor,
    out_shape: Vec<i64>,
    bijective: bool,
) -> Case {
    // buffers (`zeros_no_train`) are created in f32 whatever the store's kind: convert after building
    vs.set_kind(Kind::Double);
    settle(&vs, transform.as_ref(), &x);
    Case {
        name,
        vs,
        transform,
        x,
        out_shape,
        bijective,
    }
}

/// A batch of inputs of per-sample shape `shape` from `domain` (3 vectors or 2 images).
fn input(shape: &[i64], domain: Domain, seed: i64) -> Tensor {
    let batch = if shape.len() == 1 { 3 } else { 2 };
    let full: Vec<i64> = std::iter::once(batch)
        .chain(shape.iter().copied())
        .collect();
    match domain {
        Domain::Real => randn(&full, seed),
        Domain::UnitInterval => randn(&full, seed).sigmoid() * 0.98 + 0.01,
        Domain::Levels(levels) => {
            tch::manual_seed(seed);
            Tensor::randint(
                i64::from(levels),
                full.as_slice(),
                (Kind::Double, Device::Cpu),
            )
        }
    }
}

/// A registered layer's example, built through the registry's stack builder.
fn layer_case(example: LayerExample, seed: i64) -> Case {
    let vs = f64_store();
    let (stack, out) = build_stack(
        &vs.root(),
        &example.input,
        std::slice::from_ref(&example.config),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", example.name));
    let x = input(&example.input, example.domain, seed);
    let out_shape = std::iter::once(x.size()[0]).chain(out).collect();
    case(
        example.name.to_string(),
        vs,
        Box::new(stack),
        x,
        out_shape,
        example.bijective,
    )
}

/// The transform of a small image flow (logit, multi-scale with factor-out, ActNorm and blocks).
fn image_flow_case() -> Case {
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
        "image_flow".into(),
        vs,
        Box::new(model.flow.transform),
        x,
        vec![2, 16],
        true,
    )
}

/// Every transform under contract: each example of each registered layer, and the models.
fn cases() -> Vec<Case> {
    tch::manual_seed(0);
    let mut all: Vec<Case> = LayerConfig::examples()
        .into_iter()
        .enumerate()
        .map(|(i, example)| layer_case(example, i as i64 + 1))
        .collect();
    all.push(image_flow_case());
    all
}

/// Every registered layer has at least one example.
#[test]
fn every_registered_layer_has_an_example() {
    let covered: std::collections::BTreeSet<&str> = LayerConfig::examples()
        .iter()
        .map(|e| e.config.name())
        .collect();
    for name in LayerConfig::NAMES {
        assert!(covered.contains(name), "layer {name} has no example");
    }
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
        if !c.bijective {
            // injective: J^T J is nonsingular (full column rank), and no volume is claimed
            let gram = jac.tr().matmul(&jac);
            assert!(
                logabsdet(&gram).is_finite(),
                "{} sample {i}: rank-deficient Jacobian",
                c.name
            );
            assert_eq!(
                ld.double_value(&[i]),
                0.0,
                "{}: log-det of an injective map",
                c.name
            );
            continue;
        }
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
