//! The speed changes made for `genflow bench` keep the mathematics: each fast path is checked in
//! f64 against an independent computation (explicit operator matrices, `conv_transpose2d`,
//! autograd Jacobians, the VJP backend).
use genflow::flows::{FlowContext, IResBlock, Transform};
use genflow::linalg::logdet::{self, Backend, LogDetEstimator, Probe};
use genflow::nn::residual_net::channels_last;
use genflow::nn::{
    Activation, ActivationKind, ConvShape, ResidualNet, SpectralConfig, SpectralLinear,
};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// libtorch's generator is global: tests that seed it hold this lock.
fn lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn store(seed: i64) -> VarStore {
    tch::manual_seed(seed);
    VarStore::new(Device::Cpu)
}

fn variable(vs: &VarStore, name: &str) -> Tensor {
    vs.variables()
        .remove(name)
        .unwrap_or_else(|| panic!("no variable {name}"))
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn is_channels_last(t: &Tensor) -> bool {
    let s = t.size();
    t.stride() == [s[1] * s[2] * s[3], 1, s[3] * s[1], s[1]]
}

/// The matrix `[out*H*W, in*H*W]` of the stride-1 same-padding conv with kernel `w`, column by
/// column from basis images.
fn conv_operator_matrix(w: &Tensor, hw: i64) -> Tensor {
    let cin = w.size()[1];
    let p = w.size()[2] / 2;
    let n = cin * hw * hw;
    let eye = Tensor::eye(n, (Kind::Double, Device::Cpu)).reshape([n, cin, hw, hw]);
    let cols = eye.conv2d(w, None::<Tensor>, [1, 1], [p, p], [1, 1], 1);
    cols.reshape([n, -1]).tr()
}

#[test]
fn conv_operator_norm_matches_the_svd_of_the_operator_matrix() {
    let _guard = lock();
    let mut vs = store(1);
    let config = SpectralConfig {
        coeff: 0.9,
        n_power_iter: 5,
    };
    let layer = SpectralLinear::conv(&(vs.root() / "c"), 2, 3, 3, (4, 4), config).unwrap();
    vs.set_kind(Kind::Double);
    tch::no_grad(|| {
        let mut w = layer.weight.shallow_clone();
        let _ = w.g_mul_scalar_(4.0); // make the normalisation active
    });
    // the power iteration (whose adjoint is the flipped-kernel conv) to convergence
    layer.refine(1e-12, 5_000);
    let w_hat = tch::no_grad(|| layer.normalized_weight(false));
    let svd_norm = conv_operator_matrix(&w_hat, 4)
        .svd(true, false)
        .1
        .max()
        .double_value(&[]);
    let power_norm = layer.exact_operator_norm().unwrap();
    // both are the largest singular value of the same 48 x 32 matrix; the power iteration stops
    // at a relative change of 1e-10, its error is of that order
    assert!(
        (power_norm - svd_norm).abs() < 1e-8,
        "power {power_norm} vs SVD {svd_norm}"
    );
    assert!((svd_norm - 0.9).abs() < 1e-6, "normalised to c: {svd_norm}");
}

#[test]
fn fused_training_power_iteration_equals_the_plain_iteration() {
    let _guard = lock();
    let mut vs = store(2);
    let n = 3;
    let config = SpectralConfig {
        coeff: 0.5,
        n_power_iter: n,
    };
    let layer = SpectralLinear::conv(&(vs.root() / "c"), 2, 3, 3, (5, 5), config).unwrap();
    vs.set_kind(Kind::Double);
    let (u0, v0) = (variable(&vs, "c.u").copy(), variable(&vs, "c.v").copy());
    let w = &layer.weight;

    // reference: n iterations with conv_transpose2d / conv2d, then sigma = <u, W v>
    let normalize = |t: &Tensor| t / (t.norm() + 1e-12);
    let (mut u, mut v) = (u0, v0);
    tch::no_grad(|| {
        for _ in 0..n {
            v = normalize(&u.conv_transpose2d(
                w,
                None::<Tensor>,
                [1, 1],
                [1, 1],
                [0, 0],
                1,
                [1, 1],
            ));
            u = normalize(&v.conv2d(w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1));
        }
    });
    let sigma_ref = (&u * v.conv2d(w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1)).sum(Kind::Double);
    let w_hat_ref = w / (&sigma_ref / 0.5).clamp_min(1.0);
    let probe = Tensor::randn(w.size(), (Kind::Double, Device::Cpu));
    let grad_ref = Tensor::run_backward(
        &[(&w_hat_ref * &probe).sum(Kind::Double)],
        &[w],
        false,
        false,
    );

    let w_hat = layer.normalized_weight(true);
    let grad = Tensor::run_backward(&[(&w_hat * &probe).sum(Kind::Double)], &[w], false, false);
    // identical arithmetic up to the order of a few float operations
    assert!(max_abs_diff(&w_hat, &w_hat_ref) < 1e-13);
    assert!(max_abs_diff(&grad[0], &grad_ref[0]) < 1e-12);
    assert!(max_abs_diff(&variable(&vs, "c.u"), &u) < 1e-13);
    assert!(max_abs_diff(&variable(&vs, "c.v"), &v) < 1e-13);
    assert!((layer.recorded_sigma() - sigma_ref.double_value(&[])).abs() < 1e-13);
    assert!(layer.recorded_sigma() > 0.5, "normalisation active");
}

#[test]
fn elu_derivative_from_the_output_is_exp_of_min_and_differentiates_to_phi_second() {
    let vs = store(3);
    let act = Activation::new(&vs.root(), ActivationKind::Elu);
    let a = Tensor::linspace(-6.0, 6.0, 1201, (Kind::Double, Device::Cpu)).set_requires_grad(true);
    let (y, d) = act.forward_with_derivative(&a).unwrap();
    let expected = a.detach().clamp_max(0.0).exp();
    assert!(max_abs_diff(&d, &expected) < 1e-15);
    assert!(max_abs_diff(&y, &a.detach().elu()) < 1e-15);
    // d phi'(a) / da = phi''(a) = e^a for a < 0, 0 for a > 0
    let g = Tensor::run_backward(&[d.sum(Kind::Double)], &[&a], false, false);
    let a = a.detach();
    let phi2 = a.lt(0.0).to_kind(Kind::Double) * a.exp();
    let away_from_kink = a.abs().gt(1e-9);
    let err = ((&g[0] - phi2).abs() * away_from_kink.to_kind(Kind::Double))
        .max()
        .double_value(&[]);
    assert!(err < 1e-15, "phi'' error {err}");
}

fn conv_block(vs: &mut VarStore, n_power_iter: usize) -> IResBlock {
    let shape = ConvShape {
        channels: 2,
        hidden: 4,
        kernels: vec![3, 1, 3],
        hw: (5, 5),
    };
    let spectral = SpectralConfig {
        coeff: 0.9,
        n_power_iter,
    };
    let g = ResidualNet::conv(
        &(vs.root() / "g"),
        &shape,
        ActivationKind::Elu,
        spectral,
        true,
    )
    .unwrap();
    vs.set_kind(Kind::Double);
    tch::no_grad(|| {
        for mut t in vs.trainable_variables() {
            if t.dim() == 4 {
                let _ = t.g_mul_scalar_(3.0);
            }
        }
    });
    g.refine_spectral_norms(1e-10, 2_000);
    IResBlock::new(g)
}

#[test]
fn channels_last_block_matches_the_plain_layout_computation() {
    let _guard = lock();
    let mut vs = store(4);
    let block = conv_block(&mut vs, 5);
    let x = Tensor::randn([3, 2, 5, 5], (Kind::Double, Device::Cpu));
    assert!(x.is_contiguous());
    let est = LogDetEstimator::Series {
        terms: 4,
        probe: Probe::Gaussian,
        backend: Backend::Tangent,
    };

    tch::manual_seed(11);
    let (y, ld) = block.forward(&x, &mut FlowContext::eval(est, 0)).unwrap();
    assert!(
        is_channels_last(&y),
        "the block computes in channels-last layout"
    );

    // reference: the same series on the contiguous input, probe drawn the same way
    tch::manual_seed(11);
    let lin = block.g.linearize(&x, false).unwrap();
    assert!(lin.output.is_contiguous());
    let v = Tensor::randn([3, 2, 5, 5], (Kind::Double, Device::Cpu));
    let coefficients = logdet::series_coefficients(4);
    let ld_ref = logdet::weighted_power_traces(&mut |t| Ok(lin.jvp(t)), &v, &coefficients).unwrap();
    assert!(max_abs_diff(&y, &(&x + &lin.output)) < 1e-13);
    assert!(
        max_abs_diff(&ld, &ld_ref) < 1e-12,
        "log-det {ld:?} vs {ld_ref:?}"
    );

    // layout-independent probe draws
    tch::manual_seed(5);
    let p_plain = logdet::sample_probe(&x, Probe::Rademacher);
    tch::manual_seed(5);
    let p_cl = logdet::sample_probe(&channels_last(&x), Probe::Rademacher);
    assert!(is_channels_last(&p_cl));
    assert_eq!(max_abs_diff(&p_plain, &p_cl), 0.0);
    assert!(p_plain.abs().eq(1.0).all().int64_value(&[]) == 1);
}

#[test]
fn exact_logdet_and_inverse_of_a_conv_block_are_right() {
    let _guard = lock();
    let mut vs = store(5);
    let block = conv_block(&mut vs, 5);
    let x = Tensor::randn([2, 2, 5, 5], (Kind::Double, Device::Cpu));
    let mut ctx = FlowContext::eval(LogDetEstimator::Exact, 0);
    let (y, ld) = block.forward(&x, &mut ctx).unwrap();
    for i in 0..2 {
        let xi = x.get(i).unsqueeze(0).set_requires_grad(true);
        let yi = (&xi + block.g.forward(&xi, false).unwrap()).reshape([-1]);
        let rows: Vec<Tensor> = (0..50)
            .map(|r| Tensor::run_backward(&[yi.get(r)], &[&xi], true, false)[0].reshape([-1]))
            .collect();
        let (_, expected) = Tensor::linalg_slogdet(&Tensor::stack(&rows, 0));
        let err = (ld.double_value(&[i]) - expected.double_value(&[])).abs();
        assert!(err < 1e-10, "sample {i}: exact log-det off by {err}");
    }
    ctx.inverse.atol = 1e-12;
    ctx.inverse.rtol = 1e-12;
    let back = block.inverse(&y.contiguous(), &mut ctx).unwrap();
    // Lip(g) <= 0.9^3: the fixed point converges geometrically; stops at a 1e-12 change
    assert!(max_abs_diff(&back, &x) < 1e-10);
    assert!(ctx.inverse_stats.max_residual < 1.0);
}

#[test]
fn conv_block_gradients_agree_between_tangent_and_vjp_in_training_mode() {
    let _guard = lock();
    let mut vs = store(6);
    let block = conv_block(&mut vs, 2);
    let x = Tensor::randn([2, 2, 5, 5], (Kind::Double, Device::Cpu));
    let params: Vec<(String, Tensor)> = {
        let mut named: Vec<_> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    };
    // both backends start from the same power-iteration vectors
    let buffers: Vec<(Tensor, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(name, _)| name.ends_with(".u") || name.ends_with(".v"))
        .map(|(_, t)| (t.copy(), t))
        .collect();
    let grads = |backend| {
        tch::no_grad(|| {
            for (saved, buffer) in &buffers {
                buffer.shallow_clone().copy_(saved);
            }
        });
        for (_, t) in &params {
            let mut g = t.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        tch::manual_seed(21);
        let est = LogDetEstimator::Series {
            terms: 3,
            probe: Probe::Gaussian,
            backend,
        };
        // training mode: two power iterations per layer, then the log-det
        let (y, ld) = block.forward(&x, &mut FlowContext::train(est, 0)).unwrap();
        let loss = (y.square().sum(Kind::Double) * 0.5 - ld.sum(Kind::Double)) * 1.0;
        loss.backward();
        let g: Vec<Tensor> = params.iter().map(|(_, t)| t.grad().copy()).collect();
        (loss.double_value(&[]), g)
    };
    let (loss_t, grads_t) = grads(Backend::Tangent);
    let (loss_v, grads_v) = grads(Backend::Vjp);
    assert!(
        (loss_t - loss_v).abs() < 1e-10 * loss_t.abs().max(1.0),
        "{loss_t} vs {loss_v}"
    );
    for ((name, _), (gt, gv)) in params.iter().zip(grads_t.iter().zip(&grads_v)) {
        let scale = gt.abs().max().double_value(&[]).max(1e-3);
        let d = max_abs_diff(gt, gv);
        assert!(
            d < 1e-9 * scale,
            "parameter {name}: tangent and VJP gradients differ by {d}"
        );
    }
}

#[test]
fn freed_memory_reuse_is_applied_with_glibc() {
    let applied = genflow::bench::reuse_freed_memory();
    assert_eq!(applied, cfg!(all(target_os = "linux", target_env = "gnu")));
}
