//! Shared test helpers: autograd Jacobians and finite differences in f64.
#![allow(dead_code)]

use tch::{Kind, Tensor};

/// The Jacobian `[d_out, d_in]` of `f` at a single sample `x` (shape `[1, ...]`) by autograd rows.
pub fn autograd_jacobian(f: &dyn Fn(&Tensor) -> Tensor, x: &Tensor) -> Tensor {
    let x = x.detach().set_requires_grad(true);
    let y = f(&x).reshape([-1]);
    let rows: Vec<Tensor> = (0..y.size()[0])
        .map(|i| {
            let g = Tensor::run_backward(&[y.get(i)], &[&x], true, false);
            g[0].reshape([-1])
        })
        .collect();
    Tensor::stack(&rows, 0)
}

/// `ln |det J|` of a square matrix.
pub fn logabsdet(j: &Tensor) -> f64 {
    let (_s, l) = Tensor::linalg_slogdet(j);
    l.double_value(&[])
}

/// Central finite difference of the scalar `f` with respect to element `index` (flat) of `param`.
pub fn finite_difference(f: &mut dyn FnMut() -> f64, param: &Tensor, index: i64, h: f64) -> f64 {
    let flat = param.view([-1]);
    let original = tch::no_grad(|| flat.get(index).double_value(&[]));
    let set = |v: f64| {
        tch::no_grad(|| {
            let _ = flat.get(index).fill_(v);
        })
    };
    set(original + h);
    let plus = f();
    set(original - h);
    let minus = f();
    set(original);
    (plus - minus) / (2.0 * h)
}

/// A seeded f64 tensor of normal entries.
pub fn randn(shape: &[i64], seed: i64) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randn(shape, (Kind::Double, tch::Device::Cpu))
}

/// libtorch's random generator is global: tests that seed it hold this lock so that tests running
/// in parallel threads do not draw from it in between.
pub fn seed_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
