//! Log-determinant cost: the rank-one and matrix-exponential layers get `ln |det W|` in `O(K d)`
//! (`sum_i y_i^T x_i`) and `O(d)` (`tr A`), against an LU log-determinant (`O(d^3)`) of the same
//! `W`, for `d = 16 .. 1024`; also the cost of forming `W = exp(A)` (which the matrix-exp layer's
//! forward pass needs anyway). Single-threaded `f32` on the CPU.
//!
//! Run: `scripts/with-libtorch cargo bench --bench logdet_cost -- --warm-up-time 0.5 --measurement-time 1`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use genflow::flows::{MatrixExpConfig, MatrixExpConv1x1, RankOneExp, RankOneExpConfig};
use genflow::linalg::batch::log_abs_det;
use std::hint::black_box;
use tch::nn::VarStore;
use tch::Device;

fn logdet_cost(c: &mut Criterion) {
    tch::set_num_threads(1);
    let _guard = tch::no_grad_guard();
    let mut group = c.benchmark_group("logdet_cost");
    for d in [16i64, 32, 64, 128, 256, 512, 1024] {
        let vs = VarStore::new(Device::Cpu);
        let r1 = RankOneExp::new(&(vs.root() / "r1"), d, RankOneExpConfig::default())
            .expect("rank-one layer");
        let me = MatrixExpConv1x1::new(&(vs.root() / "me"), d, MatrixExpConfig::default())
            .expect("matrix-exp layer");
        let w_r1 = r1.weight().expect("rank-one weight");
        let w_me = me.weight().expect("matrix-exp weight");
        group.bench_with_input(BenchmarkId::new("rank_one_sum_s", d), &d, |b, _| {
            b.iter(|| black_box(r1.logdet_per_position().expect("logdet")))
        });
        group.bench_with_input(BenchmarkId::new("lu_rank_one_w", d), &d, |b, _| {
            b.iter(|| black_box(log_abs_det(&w_r1).expect("slogdet")))
        });
        group.bench_with_input(BenchmarkId::new("matrix_exp_trace", d), &d, |b, _| {
            b.iter(|| black_box(me.logdet_per_position().expect("trace")))
        });
        group.bench_with_input(BenchmarkId::new("lu_matrix_exp_w", d), &d, |b, _| {
            b.iter(|| black_box(log_abs_det(&w_me).expect("slogdet")))
        });
        group.bench_with_input(BenchmarkId::new("expm_form_w", d), &d, |b, _| {
            b.iter(|| black_box(me.weight().expect("expm")))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // No plots: criterion's plotters backend needs system fonts that CI machines may lack.
    config = Criterion::default().without_plots();
    targets = logdet_cost
}
criterion_main!(benches);
