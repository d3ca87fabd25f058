//! Optimisers with parameter groups (SPEC section 5): hand computations, the seed post's
//! reparameterisation equivalence, frozen groups, transform order, closures, noise, state, TOML, and
//! agreement with `torch.optim` over five steps (fixture `tests/fixtures/optim_pytorch.json`, written
//! by `benches/pytorch/optim_reference.py`). Everything runs in f64.

use std::collections::{BTreeMap, HashMap};
use std::{cell::RefCell, rc::Rc};

use genflow::optim::{
    GroupConfig, NoiseConfig, OptimConfig, OptimKind, Optimizer, ScheduleConfig, TransformConfig,
};
use genflow::Error;
use tch::{nn, Device, Kind, Tensor};

// ---------------------------------------------------------------- helpers

/// A VarStore of 1-D f64 variables; `"a.w"` becomes variable `w` under path `a`.
fn store(vars: &[(&str, &[f64])]) -> nn::VarStore {
    let shaped: Vec<_> = vars
        .iter()
        .map(|(n, v)| (*n, *v, vec![v.len() as i64]))
        .collect();
    shaped_store(&shaped)
}

/// A VarStore of f64 variables `(name, values, shape)`.
fn shaped_store(vars: &[(&str, &[f64], Vec<i64>)]) -> nn::VarStore {
    let mut vs = nn::VarStore::new(Device::Cpu);
    vs.set_kind(Kind::Double);
    for (name, values, shape) in vars {
        let mut parts: Vec<&str> = name.split('.').collect();
        let leaf = parts.pop().unwrap();
        let path = parts.iter().fold(vs.root(), |p, c| p / *c);
        let _ = path.var_copy(leaf, &Tensor::from_slice(values).reshape(shape.as_slice()));
    }
    vs
}

fn var(vs: &nn::VarStore, name: &str) -> Tensor {
    vs.variables()
        .remove(name)
        .unwrap_or_else(|| panic!("no variable {name}"))
}

fn values(vs: &nn::VarStore, name: &str) -> Vec<f64> {
    Vec::<f64>::try_from(&var(vs, name).flatten(0, -1)).unwrap()
}

/// Sets the gradients to exactly `grads` (backward of `sum(p * g)`), after zeroing them.
fn set_grads(vs: &nn::VarStore, opt: &mut Optimizer, grads: &[(&str, &[f64])]) {
    opt.zero_grad();
    let loss = grads
        .iter()
        .map(|(name, g)| {
            (var(vs, name) * Tensor::from_slice(g).reshape(var(vs, name).size())).sum(Kind::Double)
        })
        .reduce(|a, b| a + b)
        .unwrap();
    loss.backward();
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * w.abs().max(1.0),
            "{what}[{i}]: got {g}, want {w} (tol {tol})"
        );
    }
}

fn config(kind: OptimKind, lr: f64, groups: Vec<GroupConfig>) -> OptimConfig {
    OptimConfig {
        groups,
        ..OptimConfig::new(kind, lr)
    }
}

// ---------------------------------------------------------------- one step by hand

/// a = [1, -2] in group "a.*" (lr_mult 0.5, weight decay 0.1), b = [0.5] in the default group
/// (decay 0 unless the kind's default); gradients g_a = [2, -0.5], g_b = [4]; base lr 0.1. So
/// lr_a = 0.05, lr_b = 0.1, and with L2 decay g_a' = g_a + 0.1 a = [2.1, -0.7].
fn one_step(config: OptimConfig) -> (Vec<f64>, Vec<f64>) {
    let vs = store(&[("a.w", &[1.0, -2.0]), ("b.w", &[0.5])]);
    let mut opt = Optimizer::new(&vs, &config).unwrap();
    set_grads(&vs, &mut opt, &[("a.w", &[2.0, -0.5]), ("b.w", &[4.0])]);
    opt.step().unwrap();
    (values(&vs, "a.w"), values(&vs, "b.w"))
}

fn group_a() -> Vec<GroupConfig> {
    vec![GroupConfig {
        lr_mult: 0.5,
        weight_decay: Some(0.1),
        ..GroupConfig::new("a.*")
    }]
}

/// Tolerance of the hand computations: a few f64 roundings of numbers of order 1.
const HAND_TOL: f64 = 1e-14;

#[test]
fn sgd_nesterov_one_step_by_hand() {
    // Step 1: buffer = d, Nesterov direction d + 0.9 d = 1.9 d.
    // a: 1 - 0.05 * 1.9 * 2.1 = 0.8005, -2 + 0.05 * 1.9 * 0.7 = -1.9335; b: 0.5 - 0.1 * 1.9 * 4 = -0.26.
    let cfg = OptimConfig {
        momentum: 0.9,
        nesterov: true,
        ..config(OptimKind::Sgd, 0.1, group_a())
    };
    let (a, b) = one_step(cfg);
    assert_close(&a, &[0.8005, -1.9335], HAND_TOL, "a");
    assert_close(&b, &[-0.26], HAND_TOL, "b");
}

#[test]
fn adam_and_adamax_one_step_by_hand() {
    // Step 1 of both: the bias-corrected moments are m = g, sqrt(v) = |g| (Adam) and u = |g| + eps
    // (Adamax), so theta -= lr g / (|g| + eps). With eps = 0.5:
    // a: 1 - 0.05 * 2.1/2.6 = 0.959615384615384615..., -2 + 0.05 * 0.7/1.2 = -1.970833333...;
    // b: 0.5 - 0.1 * 4/4.5 = 0.41111...
    for kind in [OptimKind::Adam, OptimKind::Adamax] {
        let cfg = OptimConfig {
            eps: 0.5,
            ..config(kind, 0.1, group_a())
        };
        let (a, b) = one_step(cfg);
        assert_close(
            &a,
            &[0.9596153846153846, -1.9708333333333333],
            HAND_TOL,
            &format!("{kind} a"),
        );
        assert_close(&b, &[0.4111111111111111], HAND_TOL, &format!("{kind} b"));
    }
}

#[test]
fn adamw_one_step_by_hand() {
    // Decoupled decay first (a: wd 0.1, b: AdamW's default 0.01), then Adam on the raw gradient:
    // a: [1, -2] * (1 - 0.05*0.1) - 0.05 * [2/2.5, -0.5/1.0] = [0.955, -1.965];
    // b: 0.5 * (1 - 0.1*0.01) - 0.1 * 4/4.5 = 0.4995 - 0.0888... = 0.410611111...
    let cfg = OptimConfig {
        eps: 0.5,
        ..config(OptimKind::AdamW, 0.1, group_a())
    };
    let (a, b) = one_step(cfg);
    assert_close(&a, &[0.955, -1.965], HAND_TOL, "a");
    assert_close(&b, &[0.4106111111111111], HAND_TOL, "b");
}

#[test]
fn rmsprop_centered_momentum_one_step_by_hand() {
    // alpha 0.9: s = 0.1 g^2, centred mean a = 0.1 g, sqrt(s - a^2) = 0.3 |g|, r = 0.3|g| + 0.5;
    // momentum buffer = g / r at step 1. a: 1 - 0.05 * 2.1/1.13 = 0.907079646017699115...,
    // -2 + 0.05 * 0.7/0.71 = -1.950704225352112676...; b: 0.5 - 0.1 * 4/1.7 = 0.264705882352941176...
    let cfg = OptimConfig {
        alpha: 0.9,
        eps: 0.5,
        momentum: 0.5,
        centered: true,
        ..config(OptimKind::RmsProp, 0.1, group_a())
    };
    let (a, b) = one_step(cfg);
    assert_close(
        &a,
        &[0.9070796460176991, -1.9507042253521127],
        HAND_TOL,
        "a",
    );
    assert_close(&b, &[0.2647058823529412], HAND_TOL, "b");
}

// ---------------------------------------------------------------- the seed post's equivalence

/// Loss on theta (4 numbers) and psi (2 numbers), nonlinear so that gradients follow the trajectory:
/// `L = sum(c * sin(theta)) + (theta_0 psi_0 + theta_1 psi_1)^2 + sum(d * psi^2)`.
fn loss(theta: &Tensor, psi: &Tensor) -> Tensor {
    let c = Tensor::from_slice(&[1.0, -0.5, 2.0, 0.7]);
    let d = Tensor::from_slice(&[0.3, 1.5]);
    let coupling = (theta.narrow(0, 0, 2) * psi).sum(Kind::Double);
    (c * theta.sin()).sum(Kind::Double) + coupling.square() + (d * psi.square()).sum(Kind::Double)
}

const THETA0: [f64; 4] = [0.3, -1.2, 0.8, 2.0];
const PSI0: [f64; 2] = [0.5, -0.4];

/// theta after `steps` steps when theta is a parameter with lr multiplier `lambda`.
fn direct_run(base: &OptimConfig, lambda: f64, steps: usize) -> Vec<Vec<f64>> {
    let vs = store(&[("net.theta", &THETA0), ("head.psi", &PSI0)]);
    let groups = vec![GroupConfig {
        lr_mult: lambda,
        ..GroupConfig::new("net.*")
    }];
    let mut opt = Optimizer::new(
        &vs,
        &OptimConfig {
            groups,
            ..base.clone()
        },
    )
    .unwrap();
    (0..steps)
        .map(|_| {
            opt.zero_grad();
            loss(&var(&vs, "net.theta"), &var(&vs, "head.psi")).backward();
            opt.step().unwrap();
            values(&vs, "net.theta")
        })
        .collect()
}

/// theta = scale * phi after `steps` steps when phi is the parameter and no group is configured.
fn reparameterised_run(base: &OptimConfig, scale: f64, steps: usize) -> Vec<Vec<f64>> {
    let phi0: Vec<f64> = THETA0.iter().map(|t| t / scale).collect();
    let vs = store(&[("net.phi", &phi0), ("head.psi", &PSI0)]);
    let mut opt = Optimizer::new(&vs, base).unwrap();
    let theta = || var(&vs, "net.phi") * scale;
    (0..steps)
        .map(|_| {
            opt.zero_grad();
            loss(&theta(), &var(&vs, "head.psi")).backward();
            opt.step().unwrap();
            Vec::<f64>::try_from(&theta()).unwrap()
        })
        .collect()
}

#[test]
fn sgd_lr_mult_equals_sqrt_lambda_reparameterisation() {
    // theta = sqrt(lambda) phi: d theta = sqrt(lambda) d phi = -lr sqrt(lambda)^2 g, with momentum
    // too (the buffer scales by sqrt(lambda)). Equal up to f64 rounding over 6 steps.
    let base = OptimConfig {
        momentum: 0.9,
        ..OptimConfig::new(OptimKind::Sgd, 0.05)
    };
    for lambda in [0.1, 4.0] {
        let direct = direct_run(&base, lambda, 6);
        let reparam = reparameterised_run(&base, lambda.sqrt(), 6);
        for (t, (d, r)) in direct.iter().zip(&reparam).enumerate() {
            assert_close(d, r, 1e-12, &format!("lambda {lambda} step {t}"));
        }
        // The multiplier matters: lr_mult 1 ends far from both.
        let plain = direct_run(&base, 1.0, 6);
        assert!(
            (plain[5][0] - direct[5][0]).abs() > 1e-3,
            "lambda {lambda} had no effect"
        );
    }
}

#[test]
fn adaptive_lr_mult_equals_lambda_reparameterisation() {
    // theta = lambda phi: the phi-gradient is lambda g, so Adam's m, v scale by lambda, lambda^2 and
    // d phi = -lr m / (sqrt(v) + eps/lambda), d theta = lambda d phi: the multiplier lambda up to eps
    // (likewise Adamax's u and RMSprop's s). With eps = 0 the two runs agree to rounding (1e-12;
    // measured 4e-16). With eps = 1e-8 they differ by about lr * eps * |1/lambda - 1| / sqrt(s) per
    // step, fed forward through the gradients: measured at most 7e-9 over six steps for the Adam
    // family and 2.2e-7 for RMSprop (no bias correction: sqrt(s) = 0.1 |g| at step 1), so 1e-6.
    for kind in [
        OptimKind::Adam,
        OptimKind::AdamW,
        OptimKind::Adamax,
        OptimKind::RmsProp,
    ] {
        for (eps, tol) in [(0.0, 1e-12), (1e-8, 1e-6)] {
            let base = OptimConfig {
                eps,
                weight_decay: Some(0.0),
                ..OptimConfig::new(kind, 0.02)
            };
            for lambda in [0.1, 3.0] {
                let direct = direct_run(&base, lambda, 6);
                let reparam = reparameterised_run(&base, lambda, 6);
                for (t, (d, r)) in direct.iter().zip(&reparam).enumerate() {
                    assert_close(
                        d,
                        r,
                        tol,
                        &format!("{kind} eps {eps} lambda {lambda} step {t}"),
                    );
                }
                let plain = direct_run(&base, 1.0, 6);
                assert!(
                    (plain[5][0] - direct[5][0]).abs() > 1e-3,
                    "{kind} lambda {lambda} had no effect"
                );
            }
        }
    }
}

// ---------------------------------------------------------------- groups and transforms

#[test]
fn frozen_groups_do_not_change() {
    let vs = store(&[
        ("enc.w", &[1.0, 2.0]),
        ("enc.b", &[-1.0]),
        ("dec.w", &[3.0]),
    ]);
    let groups = vec![GroupConfig {
        frozen: true,
        ..GroupConfig::new("enc.*")
    }];
    // AdamW's decoupled decay (default 1e-2) would move even a zero-gradient parameter.
    let mut opt = Optimizer::new(&vs, &config(OptimKind::AdamW, 0.1, groups)).unwrap();
    for _ in 0..3 {
        set_grads(
            &vs,
            &mut opt,
            &[("enc.w", &[1.0, 1.0]), ("enc.b", &[5.0]), ("dec.w", &[1.0])],
        );
        let report = opt.step().unwrap();
        assert_eq!(report.group_grad_norms, [("default".to_string(), 1.0)]);
    }
    assert_eq!(values(&vs, "enc.w"), [1.0, 2.0]);
    assert_eq!(values(&vs, "enc.b"), [-1.0]);
    assert!(values(&vs, "dec.w")[0] < 2.8);
    let frozen: Vec<_> = opt
        .assignments()
        .into_iter()
        .filter(|a| a.frozen)
        .map(|a| a.name)
        .collect();
    assert_eq!(frozen, ["enc.b", "enc.w"]);
    // No state is kept for frozen parameters.
    let state: HashMap<String, Tensor> = opt.state_tensors().into_iter().collect();
    assert_eq!(state["optim.step.enc.w"].int64_value(&[]), 0);
    assert!(
        !state.contains_key("optim.exp_avg.enc.w") && state.contains_key("optim.exp_avg.dec.w")
    );
}

/// `set_frozen` at run time: a frozen parameter keeps its value and its state (Adam's moments would
/// otherwise move it on a zero gradient), and thawing it resumes its updates where they were.
#[test]
fn run_time_freezing_keeps_values_and_state() {
    let vs = store(&[("g.w", &[1.0, 2.0]), ("t.w", &[3.0])]);
    let mut opt = Optimizer::new(&vs, &config(OptimKind::Adam, 0.1, vec![])).unwrap();
    set_grads(&vs, &mut opt, &[("g.w", &[1.0, -1.0]), ("t.w", &[1.0])]);
    opt.step().unwrap();
    let after_one = values(&vs, "g.w");
    let state = |opt: &Optimizer| -> Vec<f64> {
        let s: HashMap<String, Tensor> = opt.state_tensors().into_iter().collect();
        Vec::<f64>::try_from(&s["optim.exp_avg.g.w"]).unwrap()
    };
    let moments = state(&opt);
    assert_eq!(opt.set_frozen("g.*", true).unwrap(), 1);
    assert!(opt
        .assignments()
        .iter()
        .any(|a| a.name == "g.w" && a.frozen));
    for _ in 0..3 {
        // g.w gets a zero gradient, as a part of a model outside the loss does
        set_grads(&vs, &mut opt, &[("g.w", &[0.0, 0.0]), ("t.w", &[1.0])]);
        opt.step().unwrap();
    }
    assert_eq!(values(&vs, "g.w"), after_one);
    assert_eq!(state(&opt), moments);
    assert!(values(&vs, "t.w")[0] < 2.7);
    assert_eq!(opt.set_frozen("g.*", false).unwrap(), 1);
    set_grads(&vs, &mut opt, &[("g.w", &[0.0, 0.0]), ("t.w", &[1.0])]);
    opt.step().unwrap();
    assert_ne!(
        values(&vs, "g.w"),
        after_one,
        "Adam's momentum moves a thawed parameter"
    );
    let err = opt.set_frozen("nothing.*", true).unwrap_err().to_string();
    assert!(err.contains("nothing.*") && err.contains("g.w"), "{err}");
}

/// One SGD step with lr 1 on gradient g: the parameter moves by exactly -transformed(g).
fn transformed(g: &[f64], transforms: Vec<TransformConfig>) -> Vec<f64> {
    let zeros = vec![0.0; g.len()];
    let vs = store(&[("p.w", &zeros)]);
    let groups = vec![GroupConfig {
        transforms,
        ..GroupConfig::new("p.*")
    }];
    let mut opt = Optimizer::new(&vs, &config(OptimKind::Sgd, 1.0, groups)).unwrap();
    set_grads(&vs, &mut opt, &[("p.w", g)]);
    opt.step().unwrap();
    values(&vs, "p.w").iter().map(|x| -x).collect()
}

#[test]
fn transforms_apply_in_the_order_given() {
    use TransformConfig::{ClipValue, Scale};
    let g = [2.0, -0.1, 0.3];
    // clamp to [-0.5, 0.5] then x4: [0.5, -0.1, 0.3] * 4
    assert_eq!(
        transformed(&g, vec![ClipValue(0.5), Scale(4.0)]),
        [2.0, -0.4, 1.2]
    );
    // x4 then clamp: [8, -0.4, 1.2] -> [0.5, -0.4, 0.5]
    assert_eq!(
        transformed(&g, vec![Scale(4.0), ClipValue(0.5)]),
        [0.5, -0.4, 0.5]
    );
}

#[test]
fn clip_norms_and_step_report_by_hand() {
    use TransformConfig::{ClipGroupNorm, ClipNorm};
    // Per tensor: [3, 4] has norm 5, clipped to 1 by the factor 1/(5 + 1e-6).
    let got = transformed(&[3.0, 4.0], vec![ClipNorm(1.0)]);
    assert_close(
        &got,
        &[3.0 / (5.0 + 1e-6), 4.0 / (5.0 + 1e-6)],
        1e-15,
        "clip_norm",
    );
    // Below the bound nothing changes.
    assert_eq!(transformed(&[0.3, 0.4], vec![ClipNorm(1.0)]), [0.3, 0.4]);

    // Group norm over a = [3, 4] and b = [0, 12]: |G| = 13 -> factor 1.3/(13 + 1e-6); then the
    // global clip to 0.65 (the other group c = [0] adds nothing): factor 0.65/(1.3*13/(13+1e-6) + 1e-6).
    let vs = store(&[("g.a", &[0.0, 0.0]), ("g.b", &[0.0, 0.0]), ("c", &[0.0])]);
    let cfg = OptimConfig {
        global_clip_norm: Some(0.65),
        ..config(
            OptimKind::Sgd,
            1.0,
            vec![GroupConfig {
                transforms: vec![ClipGroupNorm(1.3)],
                ..GroupConfig::new("g.*")
            }],
        )
    };
    let mut opt = Optimizer::new(&vs, &cfg).unwrap();
    set_grads(
        &vs,
        &mut opt,
        &[("g.a", &[3.0, 4.0]), ("g.b", &[0.0, 12.0]), ("c", &[0.0])],
    );
    let report = opt.step().unwrap();
    let group_norm = 1.3 * 13.0 / (13.0 + 1e-6);
    let factor = 1.3 / (13.0 + 1e-6) * 0.65 / (group_norm + 1e-6);
    assert_close(
        &values(&vs, "g.a"),
        &[-3.0 * factor, -4.0 * factor],
        1e-15,
        "a",
    );
    assert_close(&values(&vs, "g.b"), &[0.0, -12.0 * factor], 1e-15, "b");
    assert_eq!(report.lr, 1.0);
    assert_eq!(report.global_grad_norm, 13.0);
    assert_eq!(
        report.group_grad_norms,
        [("g.*".to_string(), 13.0), ("default".to_string(), 0.0)]
    );
    assert_close(
        &[report.update_grad_norm],
        &[13.0 * factor],
        1e-15,
        "update norm",
    );
}

#[test]
fn closure_sees_the_parameter_path_at_its_place_in_the_chain() {
    let vs = store(&[
        ("blocks.0.w", &[0.0, 0.0]),
        ("blocks.1.w", &[0.0]),
        ("head.w", &[0.0]),
    ]);
    let transforms = vec![
        TransformConfig::Scale(2.0),
        TransformConfig::Closure,
        TransformConfig::ClipValue(3.0),
    ];
    let groups = vec![GroupConfig {
        transforms,
        ..GroupConfig::new("blocks.*")
    }];
    let mut opt = Optimizer::new(&vs, &config(OptimKind::Sgd, 1.0, groups)).unwrap();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let log = seen.clone();
    opt.set_closure("blocks.*", move |path, grad| {
        log.borrow_mut()
            .push((path.to_string(), Vec::<f64>::try_from(grad).unwrap()));
        grad + 1.0
    })
    .unwrap();
    let head_seen = Rc::new(RefCell::new(Vec::new()));
    let head_log = head_seen.clone();
    opt.set_closure("default", move |path, grad| {
        head_log.borrow_mut().push(path.to_string());
        grad * -1.0
    })
    .unwrap();
    set_grads(
        &vs,
        &mut opt,
        &[
            ("blocks.0.w", &[1.0, -0.5]),
            ("blocks.1.w", &[0.5]),
            ("head.w", &[2.0]),
        ],
    );
    opt.step().unwrap();
    // The closure saw the scaled gradient (scale 2 runs first) with each parameter's path.
    let want = vec![
        ("blocks.0.w".to_string(), vec![2.0, -1.0]),
        ("blocks.1.w".to_string(), vec![1.0]),
    ];
    assert_eq!(*seen.borrow(), want);
    // Its output went through clip_value 3: [3, 0] and [2]; the default group's closure negated 2.
    assert_eq!(values(&vs, "blocks.0.w"), [-3.0, 0.0]);
    assert_eq!(values(&vs, "blocks.1.w"), [-2.0]);
    assert_eq!(values(&vs, "head.w"), [2.0]);
    assert_eq!(*head_seen.borrow(), ["head.w"]);
    assert!(opt
        .set_closure("nope.*", |_, g| g.shallow_clone())
        .unwrap_err()
        .to_string()
        .contains("\"blocks.*\""));
}

#[test]
fn closure_transform_without_a_closure_and_bad_shapes_are_errors() {
    let vs = store(&[("p.w", &[0.0, 0.0])]);
    let groups = vec![GroupConfig {
        transforms: vec![TransformConfig::Closure],
        ..GroupConfig::new("p.*")
    }];
    let mut opt = Optimizer::new(&vs, &config(OptimKind::Sgd, 1.0, groups)).unwrap();
    set_grads(&vs, &mut opt, &[("p.w", &[1.0, 1.0])]);
    let err = opt.step().unwrap_err().to_string();
    assert!(err.contains("set_closure"), "{err}");
    opt.set_closure("p.*", |_, g| g.sum(Kind::Double)).unwrap();
    assert!(matches!(opt.step(), Err(Error::Shape(_))));
    assert_eq!(values(&vs, "p.w"), [0.0, 0.0]);
}

/// Parameters after `steps` SGD steps (lr 1) on zero gradients with a noise transform: minus the noise.
fn noise_run(n: usize, noise: NoiseConfig, steps: usize) -> Vec<f64> {
    let vs = store(&[("p.w", &vec![0.0; n])]);
    let groups = vec![GroupConfig {
        transforms: vec![TransformConfig::Noise(noise)],
        ..GroupConfig::new("p.*")
    }];
    let mut opt = Optimizer::new(&vs, &config(OptimKind::Sgd, 1.0, groups)).unwrap();
    for _ in 0..steps {
        set_grads(&vs, &mut opt, &[("p.w", &vec![0.0; n])]);
        opt.step().unwrap();
    }
    values(&vs, "p.w")
}

fn mean_std(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    (
        mean,
        (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt(),
    )
}

#[test]
fn gaussian_noise_is_seeded_and_has_the_stated_std() {
    let n = 20_000;
    let noise = |seed, decay| NoiseConfig {
        std: 0.5,
        decay,
        seed,
    };
    let first = noise_run(n, noise(7, 0.0), 1);
    assert_eq!(
        first,
        noise_run(n, noise(7, 0.0), 1),
        "same seed, same noise"
    );
    assert_ne!(
        first,
        noise_run(n, noise(8, 0.0), 1),
        "another seed, other noise"
    );
    // Sample mean has std 0.5/sqrt(n) = 0.0035; the sample std has relative std 1/sqrt(2n) = 0.5%.
    // Bounds at about 6 standard errors.
    let (mean, std) = mean_std(&first);
    assert!(
        mean.abs() < 0.02 && (std / 0.5 - 1.0).abs() < 0.03,
        "mean {mean}, std {std}"
    );
    // Annealed (decay 1): step 2 adds std 0.5/(1+1)^(1/2); two independent draws sum to variance
    // 0.25 * (1 + 1/2).
    let (_, std2) = mean_std(&noise_run(n, noise(7, 1.0), 2));
    assert!(
        (std2 / (0.25f64 * 1.5).sqrt() - 1.0).abs() < 0.03,
        "annealed std {std2}"
    );
}

#[test]
fn non_finite_gradients_fail_before_any_update() {
    let vs = store(&[("a.w", &[1.0]), ("b.w", &[2.0])]);
    let mut opt = Optimizer::new(&vs, &OptimConfig::new(OptimKind::Adam, 0.1)).unwrap();
    set_grads(&vs, &mut opt, &[("a.w", &[1.0]), ("b.w", &[f64::NAN])]);
    match opt.step() {
        Err(Error::NonFinite(msg)) => assert!(msg.contains("b.w"), "{msg}"),
        other => panic!("expected NonFinite, got {other:?}"),
    }
    assert_eq!(
        (values(&vs, "a.w"), values(&vs, "b.w")),
        (vec![1.0], vec![2.0])
    );
    assert_eq!(opt.step_count(), 0);
    // A closure that produces NaN is caught too.
    let groups = vec![GroupConfig::new("a.*")];
    let mut opt = Optimizer::new(&vs, &config(OptimKind::Sgd, 0.1, groups)).unwrap();
    opt.set_closure("a.*", |_, g| g * f64::INFINITY).unwrap();
    set_grads(&vs, &mut opt, &[("a.w", &[1.0]), ("b.w", &[1.0])]);
    assert!(matches!(opt.step(), Err(Error::NonFinite(_))));
    assert_eq!(
        (values(&vs, "a.w"), values(&vs, "b.w")),
        (vec![1.0], vec![2.0])
    );
}

#[test]
fn buffers_are_ignored_and_assignments_list_groups() {
    let vs = store(&[
        ("blocks.0.w", &[1.0]),
        ("blocks.1.w", &[1.0]),
        ("head.b", &[0.0]),
    ]);
    let _stats = (vs.root() / "bn").zeros_no_train("running_mean", &[3]);
    let groups = vec![
        GroupConfig {
            lr_mult: 0.1,
            transforms: vec![TransformConfig::ClipNorm(1.0)],
            ..GroupConfig::new("blocks.0.*")
        },
        GroupConfig {
            frozen: true,
            ..GroupConfig::new("*.b")
        },
    ];
    let opt = Optimizer::new(&vs, &config(OptimKind::Adam, 1e-3, groups)).unwrap();
    let rows: Vec<(String, String, f64, bool, Vec<String>)> = opt
        .assignments()
        .into_iter()
        .map(|a| (a.name, a.group, a.lr_mult, a.frozen, a.transforms))
        .collect();
    let s = |x: &str| x.to_string();
    assert_eq!(
        rows,
        [
            (
                s("blocks.0.w"),
                s("blocks.0.*"),
                0.1,
                false,
                vec![s("clip_norm(1)")]
            ),
            (s("blocks.1.w"), s("default"), 1.0, false, vec![]),
            (s("head.b"), s("*.b"), 1.0, true, vec![]),
        ]
    );
}

#[test]
fn schedule_sets_the_step_lr() {
    let vs = store(&[("p.w", &[0.0])]);
    let schedule = ScheduleConfig::Step {
        warmup_steps: 2,
        step_size: 1,
        gamma: 0.5,
    };
    let mut opt = Optimizer::new(
        &vs,
        &OptimConfig {
            schedule,
            ..OptimConfig::new(OptimKind::Sgd, 0.8)
        },
    )
    .unwrap();
    let mut lrs = Vec::new();
    for _ in 0..4 {
        assert_eq!(
            opt.lr(),
            0.8 * opt.config().schedule.multiplier(opt.step_count())
        );
        set_grads(&vs, &mut opt, &[("p.w", &[1.0])]);
        lrs.push(opt.step().unwrap().lr);
    }
    // warm-up 0.4, 0.8, then 0.8 * 0.5^0, 0.8 * 0.5^1; SGD moved p by minus their sum.
    assert_eq!(lrs, [0.4, 0.8, 0.8, 0.4]);
    assert_close(&values(&vs, "p.w"), &[-2.4], 1e-15, "p");
}

// ---------------------------------------------------------------- state

fn trained_state_run(vs: &nn::VarStore, opt: &mut Optimizer, steps: std::ops::Range<usize>) {
    for t in steps {
        let g = [
            (t as f64).sin(),
            (t as f64 * 0.7).cos() - 0.3,
            0.2 * t as f64 - 0.5,
        ];
        set_grads(vs, opt, &[("a.w", &g[..2]), ("b.w", &g[2..])]);
        opt.step().unwrap();
    }
}

fn resume_config(kind: OptimKind) -> OptimConfig {
    let noise = TransformConfig::Noise(NoiseConfig {
        std: 0.01,
        decay: 0.55,
        seed: 3,
    });
    let groups = vec![GroupConfig {
        lr_mult: 0.5,
        transforms: vec![noise],
        ..GroupConfig::new("a.*")
    }];
    let schedule = ScheduleConfig::Cosine {
        warmup_steps: 1,
        total_steps: Some(8),
        final_mult: 0.1,
    };
    let mut cfg = OptimConfig {
        schedule,
        ..config(kind, 0.05, groups)
    };
    if kind == OptimKind::RmsProp {
        (cfg.momentum, cfg.centered) = (0.5, true);
    }
    if kind == OptimKind::Sgd {
        (cfg.momentum, cfg.nesterov) = (0.9, true);
    }
    cfg
}

#[test]
fn state_tensors_resume_exactly() {
    for kind in [
        OptimKind::Sgd,
        OptimKind::Adam,
        OptimKind::AdamW,
        OptimKind::Adamax,
        OptimKind::RmsProp,
    ] {
        let cfg = resume_config(kind);
        let init: [(&str, &[f64]); 2] = [("a.w", &[1.0, -1.0]), ("b.w", &[0.5])];
        let vs = store(&init);
        let mut opt = Optimizer::new(&vs, &cfg).unwrap();
        trained_state_run(&vs, &mut opt, 0..3);
        // A checkpoint: deep copies of the state and the parameters.
        let saved: HashMap<String, Tensor> = opt
            .state_tensors()
            .into_iter()
            .map(|(k, t)| (k, t.copy()))
            .collect();
        let (a3, b3) = (values(&vs, "a.w"), values(&vs, "b.w"));
        trained_state_run(&vs, &mut opt, 3..6);

        let resumed_vs = store(&[("a.w", &a3), ("b.w", &b3)]);
        let mut resumed = Optimizer::new(&resumed_vs, &cfg).unwrap();
        resumed.load_state_tensors(&saved).unwrap();
        assert_eq!(resumed.step_count(), 3);
        trained_state_run(&resumed_vs, &mut resumed, 3..6);
        assert_eq!(values(&resumed_vs, "a.w"), values(&vs, "a.w"), "{kind}");
        assert_eq!(values(&resumed_vs, "b.w"), values(&vs, "b.w"), "{kind}");
    }
}

#[test]
fn load_state_tensors_reports_missing_misshaped_and_foreign_entries() {
    let vs = store(&[("a.w", &[1.0, -1.0]), ("b.w", &[0.5])]);
    let mut opt = Optimizer::new(&vs, &resume_config(OptimKind::Adam)).unwrap();
    trained_state_run(&vs, &mut opt, 0..2);
    let saved = || -> HashMap<String, Tensor> { opt.state_tensors().into_iter().collect() };
    let mut fresh = Optimizer::new(&vs, &resume_config(OptimKind::Adam)).unwrap();

    let mut missing = saved();
    missing.remove("optim.exp_avg_sq.b.w");
    let err = fresh.load_state_tensors(&missing).unwrap_err().to_string();
    assert!(err.contains("optim.exp_avg_sq.b.w"), "{err}");

    let mut misshaped = saved();
    misshaped.insert(
        "optim.exp_avg.a.w".into(),
        Tensor::zeros([3], (Kind::Double, Device::Cpu)),
    );
    assert!(matches!(
        fresh.load_state_tensors(&misshaped),
        Err(Error::Shape(_))
    ));
    assert_eq!(fresh.step_count(), 0, "a failed load changes nothing");

    // Plain SGD keeps no buffers: Adam's moments are foreign entries.
    let mut sgd = Optimizer::new(&vs, &OptimConfig::new(OptimKind::Sgd, 0.1)).unwrap();
    let err = sgd.load_state_tensors(&saved()).unwrap_err().to_string();
    assert!(err.contains("optim.exp_avg"), "{err}");
}

// ---------------------------------------------------------------- TOML

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    optim: OptimConfig,
}

fn parse(text: &str) -> Result<OptimConfig, String> {
    let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
    file.optim.validate().map_err(|e| e.to_string())?;
    Ok(file.optim)
}

#[test]
fn toml_form_of_the_issue_parses() {
    let cfg = parse(
        r#"
        [optim]
        kind = "adam"
        lr = 1e-3
        global_clip_norm = 5.0
        schedule = { kind = "cosine", warmup_steps = 100, total_steps = 10000 }
        [[optim.groups]]
        pattern = "blocks.0.*"
        lr_mult = 0.1
        transforms = [{ clip_norm = 1.0 }, "closure", { noise = { std = 0.01, seed = 4 } }]
        [[optim.groups]]
        pattern = "embed.*"
        frozen = true
        "#,
    )
    .unwrap();
    let want = OptimConfig {
        global_clip_norm: Some(5.0),
        schedule: ScheduleConfig::Cosine {
            warmup_steps: 100,
            total_steps: Some(10000),
            final_mult: 0.0,
        },
        groups: vec![
            GroupConfig {
                lr_mult: 0.1,
                transforms: vec![
                    TransformConfig::ClipNorm(1.0),
                    TransformConfig::Closure,
                    TransformConfig::Noise(NoiseConfig {
                        std: 0.01,
                        decay: 0.55,
                        seed: 4,
                    }),
                ],
                ..GroupConfig::new("blocks.0.*")
            },
            GroupConfig {
                frozen: true,
                ..GroupConfig::new("embed.*")
            },
        ],
        ..OptimConfig::default()
    };
    assert_eq!(cfg, want);
    // Round trip through the serialised form.
    assert_eq!(
        OptimConfig::from_toml(&toml::to_string(&cfg).unwrap()).unwrap(),
        cfg
    );
}

#[test]
fn toml_errors_name_the_problem() {
    let cases = [
        ("[optim]\nkind = \"adam\"\nlr = 1e-3\nbeta = [0.9, 0.99]\n", "beta"),
        ("[optim]\nkind = \"adagrad\"\nlr = 1e-3\n", "adagrad"),
        ("[optim]\nkind = \"adam\"\nlr = 1e-3\n[[optim.groups]]\npattern = \"a\"\ntransforms = [{ clip_nrom = 1.0 }]\n", "clip_nrom"),
        ("[optim]\nkind = \"adam\"\nlr = 1e-3\n[[optim.groups]]\npattern = \"a\"\nlr_mul = 2.0\n", "lr_mul"),
        ("[optim]\nkind = \"adam\"\nlr = 1e-3\nschedule = { kind = \"cosine\", total = 10 }\n", "total"),
        ("[optim]\nkind = \"adam\"\nlr = 1e-3\nmomentum = 0.9\n", "momentum has no effect"),
        ("[optim]\nkind = \"sgd\"\nlr = 1e-3\nnesterov = true\n", "nesterov"),
        ("[optim]\nkind = \"adam\"\nlr = -1.0\n", "lr = -1"),
        ("[optim]\nkind = \"adam\"\nlr = 1e-3\n[[optim.groups]]\npattern = \"a\"\ntransforms = [{ clip_norm = 0.0 }]\n", "clip_norm = 0"),
    ];
    for (text, needle) in cases {
        let err = parse(text).unwrap_err();
        assert!(err.contains(needle), "{needle:?} not in error: {err}");
    }
}

#[test]
fn pattern_matching_nothing_names_pattern_and_parameters() {
    let vs = store(&[("blocks.0.w", &[1.0]), ("head.b", &[0.0])]);
    let cfg = config(OptimKind::Adam, 1e-3, vec![GroupConfig::new("block.*")]);
    let err = Optimizer::new(&vs, &cfg).unwrap_err().to_string();
    assert!(
        err.contains("\"block.*\"") && err.contains("blocks.0.w") && err.contains("head.b"),
        "{err}"
    );
}

// ---------------------------------------------------------------- against PyTorch

#[derive(serde::Deserialize)]
struct Fixture {
    shapes: BTreeMap<String, Vec<i64>>,
    init: BTreeMap<String, Vec<f64>>,
    grads: Vec<BTreeMap<String, Vec<f64>>>,
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    optim: OptimConfig,
    params: Vec<BTreeMap<String, Vec<f64>>>,
}

#[test]
fn matches_torch_optim_over_five_steps() {
    // Same f64 formulas as torch.optim's single-tensor code; only the grouping of a few operations
    // differs (e.g. PyTorch's fused addcmul with a value), so the trajectories agree to a few ulps;
    // 1e-12 relative leaves room for five steps of that.
    let fixture: Fixture =
        serde_json::from_str(include_str!("fixtures/optim_pytorch.json")).unwrap();
    assert_eq!(fixture.cases.len(), 13);
    for case in &fixture.cases {
        let init: Vec<(&str, &[f64], Vec<i64>)> = fixture
            .init
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice(), fixture.shapes[n].clone()))
            .collect();
        let vs = shaped_store(&init);
        let mut opt =
            Optimizer::new(&vs, &case.optim).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        for (t, (grads, want)) in fixture.grads.iter().zip(&case.params).enumerate() {
            let grads: Vec<(&str, &[f64])> = grads
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_slice()))
                .collect();
            set_grads(&vs, &mut opt, &grads);
            opt.step().unwrap();
            for (name, want) in want {
                assert_close(
                    &values(&vs, name),
                    want,
                    1e-12,
                    &format!("{} step {t} {name}", case.name),
                );
            }
        }
    }
}
