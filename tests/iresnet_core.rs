//! The i-ResNet core (SPEC section 1) checked in f64 against exact computations.
mod common;

use common::{autograd_jacobian, finite_difference, logabsdet, randn, seed_lock};
use genflow::flows::{FlowContext, IResBlock, Transform};
use genflow::linalg::logdet::{self, Backend, LogDetEstimator, Probe, TermDistribution};
use genflow::nn::{ActivationKind, ResidualNet, SpectralConfig, SpectralLinear};
use tch::{nn::VarStore, Device, Kind, Tensor};

const DIM: i64 = 3;

fn block(vs: &VarStore, coeff: f64, act: ActivationKind) -> IResBlock {
    let g = ResidualNet::mlp(
        &(vs.root() / "g"),
        &[DIM, 16, 16, DIM],
        act,
        SpectralConfig {
            coeff,
            n_power_iter: 5,
        },
        false,
    )
    .unwrap();
    IResBlock::new(g)
}

fn f64_store() -> VarStore {
    tch::manual_seed(0);
    let mut vs = VarStore::new(Device::Cpu);
    vs.set_kind(Kind::Double);
    vs
}

/// Makes the weights large so that spectral normalisation is active, then settles the power
/// iteration so evaluation is deterministic.
fn settled_block(vs: &mut VarStore, coeff: f64, act: ActivationKind) -> IResBlock {
    let b = block(vs, coeff, act);
    vs.set_kind(Kind::Double);
    tch::no_grad(|| {
        for (_, mut t) in vs.variables() {
            if t.requires_grad() && t.dim() == 2 {
                let _ = t.g_mul_scalar_(3.0);
            }
        }
    });
    b.g.refine_spectral_norms(1e-12, 1000);
    b
}

fn exact_ctx() -> FlowContext {
    FlowContext::eval(LogDetEstimator::Exact, 0)
}

#[test]
fn tangent_pass_matches_central_finite_difference() {
    let _guard = seed_lock();
    for act in [
        ActivationKind::Elu,
        ActivationKind::Softplus,
        ActivationKind::Lipswish,
    ] {
        let mut vs = f64_store();
        let b = settled_block(&mut vs, 0.9, act);
        let x = randn(&[4, DIM], 1);
        let t = randn(&[4, DIM], 2);
        let lin = b.g.linearize(&x, false).unwrap();
        let jvp = lin.jvp(&t);
        let h = 1e-6;
        let fd = (b.g.forward(&(&x + &t * h), false).unwrap()
            - b.g.forward(&(&x - &t * h), false).unwrap())
            / (2.0 * h);
        let err = (jvp - fd).abs().max().double_value(&[]);
        // central differences err O(h^2 |g'''|) + O(eps/h): about 1e-9 in f64
        assert!(err < 1e-7, "{act:?}: tangent vs FD error {err}");
    }
}

#[test]
fn exact_logdet_matches_autograd_jacobian() {
    let _guard = seed_lock();
    let mut vs = f64_store();
    let b = settled_block(&mut vs, 0.9, ActivationKind::Lipswish);
    let x = randn(&[3, DIM], 3);
    let (_, ld) = b.forward(&x, &mut exact_ctx()).unwrap();
    for i in 0..3 {
        let xi = x.narrow(0, i, 1);
        let j = autograd_jacobian(&|z| b.forward(z, &mut exact_ctx()).unwrap().0, &xi);
        let want = logabsdet(&j);
        let got = ld.double_value(&[i]);
        assert!((got - want).abs() < 1e-10, "sample {i}: {got} vs {want}");
    }
}

/// `sum_k c_k tr(J^k)` with exact traces from the full Jacobian.
fn exact_trace_series(jac: &Tensor, n: usize) -> Tensor {
    let mut power = jac.shallow_clone();
    let mut total = Tensor::zeros([jac.size()[0]], (Kind::Double, Device::Cpu));
    for (k, c) in logdet::series_coefficients(n).into_iter().enumerate() {
        if k > 0 {
            power = power.matmul(jac);
        }
        total = total
            + power
                .diagonal(0, 1, 2)
                .sum_dim_intlist([1].as_slice(), false, Kind::Double)
                * c;
    }
    total
}

#[test]
fn power_series_converges_to_exact_logdet_within_the_truncation_bound() {
    let _guard = seed_lock();
    let mut vs = f64_store();
    let b = settled_block(&mut vs, 0.9, ActivationKind::Elu);
    let x = randn(&[8, DIM], 4);
    let lin = b.g.linearize(&x, false).unwrap();
    let jac = logdet::full_jacobian(&mut |t| Ok(lin.jvp(t)), &x).unwrap();
    let (_, exact) = b.forward(&x, &mut exact_ctx()).unwrap();
    let lip = b.g.lipschitz_bound().unwrap();
    assert!(lip <= 0.9f64.powi(3) * (1.0 + 1e-9), "Lip bound {lip}");
    let mut previous = f64::INFINITY;
    for n in [1usize, 2, 5, 10, 20, 60] {
        let err = (exact_trace_series(&jac, n) - &exact)
            .abs()
            .max()
            .double_value(&[]);
        let bound = logdet::truncation_bound(DIM as usize, lip, n);
        assert!(
            err <= bound + 1e-12,
            "n={n}: error {err} above the paper's bound {bound}"
        );
        assert!(err <= previous + 1e-12, "series error grew at n={n}");
        previous = err;
    }
    assert!(
        previous < 1e-8,
        "60 terms should reach the exact log-det, error {previous}"
    );
}

/// Mean and standard error of `n` calls of `estimate`.
fn mean_and_se(n: usize, mut estimate: impl FnMut() -> f64) -> (f64, f64) {
    let xs: Vec<f64> = (0..n).map(|_| estimate()).collect();
    let mean = xs.iter().sum::<f64>() / n as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, (var / n as f64).sqrt())
}

#[test]
fn hutchinson_and_roulette_estimates_are_unbiased() {
    let _guard = seed_lock();
    let mut vs = f64_store();
    let b = settled_block(&mut vs, 0.9, ActivationKind::Lipswish);
    let x = randn(&[1, DIM], 5);
    let lin = b.g.linearize(&x, false).unwrap();
    let jac = logdet::full_jacobian(&mut |t| Ok(lin.jvp(t)), &x).unwrap();
    let (_, exact) = b.forward(&x, &mut exact_ctx()).unwrap();
    let exact = exact.double_value(&[0]);
    tch::manual_seed(11);
    for probe in [Probe::Gaussian, Probe::Rademacher] {
        let est = LogDetEstimator::Series {
            terms: 4,
            probe,
            backend: Backend::Tangent,
        };
        let mut ctx = FlowContext::eval(est, 1);
        let target = exact_trace_series(&jac, 4).double_value(&[0]);
        let (mean, se) = mean_and_se(4000, || {
            b.forward(&x, &mut ctx).unwrap().1.double_value(&[0])
        });
        assert!(
            (mean - target).abs() < 3.0 * se,
            "{probe:?}: mean {mean} vs {target} (se {se})"
        );
    }
    for dist in [
        TermDistribution::Geometric { p: 0.5 },
        TermDistribution::Poisson { lambda: 2.0 },
    ] {
        let est = LogDetEstimator::Roulette {
            n_exact: 1,
            dist,
            probe: Probe::Gaussian,
            backend: Backend::Tangent,
        };
        let mut ctx = FlowContext::eval(est, 2);
        let (mean, se) = mean_and_se(6000, || {
            b.forward(&x, &mut ctx).unwrap().1.double_value(&[0])
        });
        assert!(
            (mean - exact).abs() < 3.0 * se,
            "{dist:?}: mean {mean} vs exact {exact} (se {se})"
        );
        assert!(
            se < 0.05 * exact.abs().max(0.1),
            "{dist:?}: standard error {se} too large to test"
        );
    }
}

#[test]
fn fixed_point_inverse_recovers_inputs() {
    let _guard = seed_lock();
    for kind in [Kind::Double, Kind::Float] {
        let mut vs = f64_store();
        let b = settled_block(&mut vs, 0.9, ActivationKind::Elu);
        vs.set_kind(kind);
        let x = randn(&[64, DIM], 6).to_kind(kind) * 2.0;
        let mut ctx = exact_ctx();
        ctx.inverse.atol = 1e-7;
        ctx.inverse.rtol = 1e-7;
        let (y, _) = b.forward(&x, &mut ctx).unwrap();
        let back = b.inverse(&y, &mut ctx).unwrap();
        let err = (back - &x).abs().max().double_value(&[]);
        assert!(err < 1e-5, "{kind:?}: round-trip error {err}");
        let stats = ctx.inverse_stats;
        assert!(
            stats.max_residual < 1.0 && stats.max_iters < ctx.inverse.max_iter,
            "{stats:?}"
        );
    }
}

#[test]
fn lipschitz_constant_respects_c_to_the_l() {
    let _guard = seed_lock();
    let mut vs = f64_store();
    let b = settled_block(&mut vs, 0.7, ActivationKind::Softplus);
    let bound = b.g.lipschitz_bound().unwrap();
    assert!(bound <= 0.7f64.powi(3) * (1.0 + 1e-9), "bound {bound}");
    // the empirical |J_g(x)|_2 at random points never exceeds the bound
    let x = randn(&[32, DIM], 7) * 3.0;
    let lin = b.g.linearize(&x, false).unwrap();
    let jac = logdet::full_jacobian(&mut |t| Ok(lin.jvp(t)), &x).unwrap();
    let worst = jac.svd(true, false).1.max().double_value(&[]);
    assert!(
        worst <= bound * (1.0 + 1e-9),
        "|J| {worst} above bound {bound}"
    );
}

#[test]
fn spectral_norm_estimate_matches_svd() {
    let _guard = seed_lock();
    let mut vs = f64_store();
    let layer = SpectralLinear::dense(
        &vs.root(),
        7,
        5,
        SpectralConfig {
            coeff: 0.9,
            n_power_iter: 1,
        },
    )
    .unwrap();
    vs.set_kind(Kind::Double);
    layer.refine(1e-14, 10_000);
    let sigma = {
        let _ = layer.normalized_weight(true);
        layer.recorded_sigma()
    };
    let exact = layer
        .weight
        .detach()
        .svd(true, false)
        .1
        .max()
        .double_value(&[]);
    assert!(
        (sigma - exact).abs() < 1e-9 * exact,
        "power iteration {sigma} vs SVD {exact}"
    );
}

/// The estimate for a fixed probe as a function of the parameters.
fn estimate_with_seed(b: &IResBlock, x: &Tensor, est: LogDetEstimator, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    let mut ctx = FlowContext::eval(est, 0);
    b.forward(x, &mut ctx).unwrap().1.sum(Kind::Double)
}

#[test]
fn estimator_gradients_match_finite_differences_and_both_backends_agree() {
    let _guard = seed_lock();
    let mut vs = f64_store();
    let b = settled_block(&mut vs, 0.9, ActivationKind::Lipswish);
    let x = randn(&[4, DIM], 8);
    let tangent = LogDetEstimator::Series {
        terms: 5,
        probe: Probe::Gaussian,
        backend: Backend::Tangent,
    };
    let vjp = LogDetEstimator::Series {
        terms: 5,
        probe: Probe::Gaussian,
        backend: Backend::Vjp,
    };
    let params: Vec<(String, Tensor)> = {
        let mut p: Vec<_> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        p.sort_by(|a, b| a.0.cmp(&b.0));
        p
    };
    let grads = |est| {
        for (_, t) in &params {
            let mut g = t.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        let v = estimate_with_seed(&b, &x, est, 42);
        v.backward();
        let g: Vec<Tensor> = params
            .iter()
            .map(|(_, t)| {
                if t.grad().defined() {
                    t.grad().copy()
                } else {
                    t.zeros_like()
                }
            })
            .collect();
        (v.double_value(&[]), g)
    };
    let (value_t, grads_t) = grads(tangent);
    let (value_v, grads_v) = grads(vjp);
    assert!(
        (value_t - value_v).abs() < 1e-10,
        "tangent {value_t} vs vjp {value_v}"
    );
    for ((name, _), (gt, gv)) in params.iter().zip(grads_t.iter().zip(&grads_v)) {
        let d = (gt - gv).abs().max().double_value(&[]);
        assert!(d < 1e-9, "{name}: tangent and VJP gradients differ by {d}");
    }
    for ((name, p), g) in params.iter().zip(&grads_t) {
        for index in [0i64, p.numel() as i64 - 1] {
            let fd = finite_difference(
                &mut || tch::no_grad(|| estimate_with_seed(&b, &x, tangent, 42).double_value(&[])),
                p,
                index,
                1e-6,
            );
            let an = g.view([-1]).double_value(&[index]);
            assert!(
                (fd - an).abs() < 1e-6 * (1.0 + an.abs()),
                "{name}[{index}]: FD {fd} vs autograd {an}"
            );
        }
    }
}
