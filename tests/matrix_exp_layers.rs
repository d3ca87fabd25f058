//! The always-invertible linear flow layers (SPEC section 2): `RankOneExp` (a product of rank-one
//! exponentials) and `MatrixExpConv1x1` (`W = exp(A)`), as dense layers on `[batch, d]` and 1x1
//! convolutions on `[batch, C, H, W]`: exact inversion, log-dets equal to the log|det| of the full
//! Jacobian (autograd rows, f64), agreement with their dense weight, and parameter gradients against
//! finite differences (f64).

mod common;

use common::seed_lock;
use genflow::flows::{
    FlowContext, MatrixExpConfig, MatrixExpConv1x1, RankOneExp, RankOneExpConfig, Sequential,
    Transform,
};
use genflow::linalg::batch::log_abs_det;
use genflow::linalg::expm::expm;
use genflow::linalg::logdet::LogDetEstimator;
use genflow::Error;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

const U: f64 = f64::EPSILON / 2.0;

fn ctx() -> FlowContext {
    FlowContext::eval(LogDetEstimator::Exact, 0)
}

fn store(kind: Kind) -> VarStore {
    let mut vs = VarStore::new(Device::Cpu);
    vs.set_kind(kind);
    vs
}

fn rank_one(vs: &VarStore, c: i64, factors: usize, init_scale: f64) -> RankOneExp {
    RankOneExp::new(
        &(vs.root() / "r1"),
        c,
        RankOneExpConfig {
            factors,
            init_scale,
        },
    )
    .unwrap()
}

fn matrix_exp(vs: &VarStore, c: i64, init_scale: f64) -> MatrixExpConv1x1 {
    MatrixExpConv1x1::new(&(vs.root() / "mexp"), c, MatrixExpConfig { init_scale }).unwrap()
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().double_value(&[])
}

/// `ln |det J_f(x)|` per sample from the full Jacobian, whose rows are autograd gradients of the
/// outputs (samples are independent, so one backward pass per output coordinate serves the batch).
fn jacobian_logdet(layer: &dyn Transform, x: &Tensor) -> Tensor {
    let x = x.detach().set_requires_grad(true);
    let (y, _) = layer.forward(&x, &mut ctx()).unwrap();
    let batch = x.size()[0];
    let y = y.reshape([batch, -1]);
    let d = y.size()[1];
    let rows: Vec<Tensor> = (0..d)
        .map(|i| {
            let g = Tensor::run_backward(&[y.select(1, i).sum(y.kind())], &[&x], true, false);
            g[0].reshape([batch, d])
        })
        .collect();
    log_abs_det(&Tensor::stack(&rows, 1)).unwrap()
}

/// Both layers, each with its own store (3 rank-one factors).
fn layers(kind: Kind, c: i64, scale: f64) -> Vec<(VarStore, Box<dyn Transform>)> {
    let (a, b) = (store(kind), store(kind));
    let r1: Box<dyn Transform> = Box::new(rank_one(&a, c, 3, scale));
    let me: Box<dyn Transform> = Box::new(matrix_exp(&b, c, scale));
    vec![(a, r1), (b, me)]
}

#[test]
fn layers_invert_to_1e5_in_f32() {
    // libtorch\'s generator is global: hold the lock while drawing from it
    let _guard = seed_lock();
    // Unit-scale inputs, |ln W|_2 about 1: the round trip errs by about u_32 |W| |W^-1| |x| ~ 1e-6.
    tch::manual_seed(0);
    for (_vs, layer) in layers(Kind::Float, 6, 0.5) {
        for shape in [vec![16, 6], vec![4, 6, 5, 5], vec![2, 6, 3, 4, 2]] {
            let x = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu));
            let (y, ld) = layer.forward(&x, &mut ctx()).unwrap();
            assert_eq!(y.size(), x.size());
            assert_eq!(ld.size(), vec![shape[0]]);
            assert!(
                max_abs(&(&y - &x)) > 1e-2,
                "{}: the layer should not be the identity",
                layer.name()
            );
            let back = layer.inverse(&y, &mut ctx()).unwrap();
            let err = max_abs(&(back - &x));
            assert!(
                err < 1e-5,
                "{} on {shape:?}: round trip error {err:e}",
                layer.name()
            );
        }
    }
}

#[test]
fn logdets_equal_the_exact_jacobian_logdet() {
    // libtorch\'s generator is global: hold the lock while drawing from it
    let _guard = seed_lock();
    // f64; the Jacobian is exact (linear layers), so agreement to rounding: 1e-12 on ln|det| of
    // sizes up to 18.
    tch::manual_seed(1);
    let mut flow = Sequential::new();
    let mut stores = vec![];
    for (vs, layer) in layers(Kind::Double, 3, 1.0) {
        for shape in [vec![3, 3], vec![2, 3, 2, 3]] {
            let x = Tensor::randn(shape.as_slice(), (Kind::Double, Device::Cpu));
            let (_, ld) = layer.forward(&x, &mut ctx()).unwrap();
            let exact = jacobian_logdet(layer.as_ref(), &x);
            assert!(
                max_abs(&exact) > 1e-2,
                "{}: log-det should not vanish",
                layer.name()
            );
            let err = max_abs(&(ld - exact));
            assert!(
                err < 1e-12,
                "{} on {shape:?}: log-det error {err:e}",
                layer.name()
            );
        }
        flow.push_boxed(layer);
        stores.push(vs);
    }
    let x = Tensor::randn([2, 3, 2, 2], (Kind::Double, Device::Cpu));
    let (y, ld) = flow.forward(&x, &mut ctx()).unwrap();
    assert!(max_abs(&(ld - jacobian_logdet(&flow, &x))) < 1e-12);
    assert!(max_abs(&(flow.inverse(&y, &mut ctx()).unwrap() - x)) < 1e-12);
}

#[test]
fn forward_applies_the_dense_weight_and_logdet_is_its_lu_logdet() {
    // libtorch\'s generator is global: hold the lock while drawing from it
    let _guard = seed_lock();
    // f64. Dense: y = x W^T; conv: the same W at every position. log-det per position = LU ln|det W|.
    tch::manual_seed(2);
    let vs = store(Kind::Double);
    let r1 = rank_one(&vs, 5, 4, 1.0);
    let me = matrix_exp(&vs, 5, 1.0);
    let x = Tensor::randn([4, 5, 3, 2], (Kind::Double, Device::Cpu));
    for (layer, w, ldp) in [
        (
            &r1 as &dyn Transform,
            r1.weight().unwrap(),
            r1.logdet_per_position().unwrap(),
        ),
        (
            &me as &dyn Transform,
            me.weight().unwrap(),
            me.logdet_per_position().unwrap(),
        ),
    ] {
        let (y, ld) = layer.forward(&x, &mut ctx()).unwrap();
        let want = Tensor::einsum("ij,bjhw->bihw", &[&w, &x], None::<i64>);
        assert!(max_abs(&(y - want)) < 1e-13);
        let lu = log_abs_det(&w).unwrap();
        assert!(max_abs(&(&ldp - &lu)) < 1e-13, "{}", layer.name());
        assert!(max_abs(&(ld - lu * 6.0)) < 1e-12);
        let dense = Tensor::randn([7, 5], (Kind::Double, Device::Cpu));
        let (yd, _) = layer.forward(&dense, &mut ctx()).unwrap();
        assert!(max_abs(&(yd - dense.matmul(&w.tr()))) < 1e-13);
    }
    // The matrix-exp weight against libtorch's own matrix_exp (an independent algorithm).
    let theirs = me.generator().linalg_matrix_exp();
    assert!(max_abs(&(me.weight().unwrap() - theirs)) < 1e-13);
    assert!(
        max_abs(
            &(expm(&me.generator().neg())
                .unwrap()
                .matmul(&me.weight().unwrap())
                - Tensor::eye(5, (Kind::Double, Device::Cpu)))
        ) < 1e-13
    );
}

/// `L = <r, f(x)> + 0.3 sum ln|det|` for fixed `x`, `r`.
fn loss(layer: &dyn Transform, x: &Tensor, r: &Tensor) -> Tensor {
    let (y, ld) = layer.forward(x, &mut ctx()).unwrap();
    (y * r).sum(Kind::Double) + ld.sum(Kind::Double) * 0.3
}

#[test]
fn parameter_gradients_match_finite_differences() {
    // libtorch\'s generator is global: hold the lock while drawing from it
    let _guard = seed_lock();
    // f64, central differences with step 1e-6: truncation ~1e-12 |L'''|, rounding ~1e-10.
    tch::manual_seed(3);
    let x = Tensor::randn([2, 3, 2, 2], (Kind::Double, Device::Cpu));
    let r = Tensor::randn([2, 3, 2, 2], (Kind::Double, Device::Cpu));
    let h = 1e-6;
    for (vs, layer) in layers(Kind::Double, 3, 1.0) {
        loss(layer.as_ref(), &x, &r).backward();
        let mut checked = 0;
        for (name, var) in vs.variables() {
            let grad = var.grad();
            for i in 0..var.numel() as i64 {
                let flat = var.view([-1]);
                let old = flat.double_value(&[i]);
                let at = |v: f64| {
                    let _ = tch::no_grad(|| flat.get(i).fill_(v));
                    tch::no_grad(|| loss(layer.as_ref(), &x, &r).double_value(&[]))
                };
                let fd = (at(old + h) - at(old - h)) / (2.0 * h);
                at(old);
                assert_eq!(flat.double_value(&[i]), old);
                let g = grad.view([-1]).double_value(&[i]);
                assert!(
                    (g - fd).abs() < 1e-7 * fd.abs().max(1.0),
                    "{name}[{i}]: autograd {g} vs finite differences {fd}"
                );
                checked += 1;
            }
        }
        assert!(
            checked >= 9,
            "{}: gradients reached {checked} parameters",
            layer.name()
        );
    }
}

#[test]
fn zero_init_is_the_identity() {
    // libtorch\'s generator is global: hold the lock while drawing from it
    let _guard = seed_lock();
    let x = Tensor::randn([3, 4, 2, 2], (Kind::Double, Device::Cpu));
    for (_vs, layer) in layers(Kind::Double, 4, 0.0) {
        let (y, ld) = layer.forward(&x, &mut ctx()).unwrap();
        assert!(max_abs(&(y - &x)) <= 4.0 * U);
        assert_eq!(max_abs(&ld), 0.0);
    }
}

#[test]
fn bad_inputs_and_settings_are_errors() {
    // libtorch\'s generator is global: hold the lock while drawing from it
    let _guard = seed_lock();
    for (_vs, layer) in layers(Kind::Float, 4, 0.1) {
        let wrong_c = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
        assert!(matches!(
            layer.forward(&wrong_c, &mut ctx()),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            layer.inverse(&wrong_c, &mut ctx()),
            Err(Error::Shape(_))
        ));
        let one_d = Tensor::zeros([4], (Kind::Float, Device::Cpu));
        assert!(matches!(
            layer.forward(&one_d, &mut ctx()),
            Err(Error::Shape(_))
        ));
        let wrong_kind = Tensor::zeros([2, 4], (Kind::Double, Device::Cpu));
        assert!(matches!(
            layer.forward(&wrong_kind, &mut ctx()),
            Err(Error::Shape(_))
        ));
    }
    let vs = store(Kind::Float);
    let p = vs.root();
    assert!(matches!(
        RankOneExp::new(
            &p,
            4,
            RankOneExpConfig {
                factors: 0,
                init_scale: 0.1
            }
        ),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        RankOneExp::new(&p, 0, RankOneExpConfig::default()),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        MatrixExpConv1x1::new(
            &p,
            4,
            MatrixExpConfig {
                init_scale: f64::NAN
            }
        ),
        Err(Error::Config(_))
    ));
    let cfg: RankOneExpConfig = serde_json::from_str(r#"{"factors": 2}"#).unwrap();
    assert_eq!(
        cfg,
        RankOneExpConfig {
            factors: 2,
            ..Default::default()
        }
    );
    assert!(serde_json::from_str::<MatrixExpConfig>(r#"{"scale": 1}"#).is_err());
}
