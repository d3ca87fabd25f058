//! The benchmark workloads: models, inputs and the timed closures.

use super::timing::{measure, repeat};
use super::{BenchConfig, BlockShape, Workload, WorkloadResult};
use crate::distributions::StandardNormal;
use crate::flows::{Flow, FlowContext, IResBlock, Sequential, Transform};
use crate::gan::{Gan, GanLosses, GanObjective, RealData};
use crate::linalg::logdet::{Backend, LogDetEstimator, Probe};
use crate::models::{ImageFlow, VectorFlow, VectorFlowConfig};
use crate::nn::{ActivationKind, ConvShape, ResidualNet, SpectralConfig};
use crate::optim::Optimizer;
use crate::tasks::{JobConfig, TaskConfig};
use crate::train::Objective;
use crate::{Error, Result};
use tch::nn::{OptimizerConfig, Path, VarStore};
use tch::{Device, Kind, Tensor};

/// Learning rate of the Adam steps (Residual Flows' default).
const LEARNING_RATE: f64 = 1e-3;
/// Power-iteration tolerance and limit used to settle the spectral norms before evaluation
/// workloads, so that every implementation inverts a block normalised to the same `c`.
const REFINE_TOL: f64 = 1e-6;
const REFINE_MAX_ITER: usize = 200;
/// Series terms of the cheap side of the paired `logdet-terms` measurement.
const LOW_TERMS: usize = 1;
/// Series terms of `mnist-step`.
pub const MNIST_TERMS: usize = 3;

/// Runs one workload; `logdet-terms` gives one result per backend.
pub fn run_workload(workload: Workload, config: &BenchConfig) -> Result<Vec<WorkloadResult>> {
    tch::manual_seed(config.seed);
    Ok(match workload {
        Workload::BlockStep => vec![block_step(config)?],
        Workload::BlockForward => vec![block_forward(config)?],
        Workload::BlockInverse => vec![block_inverse(config)?],
        Workload::LogdetTerms => {
            vec![
                logdet_term(config, Backend::Tangent)?,
                logdet_term(config, Backend::Vjp)?,
            ]
        }
        Workload::ToyStep => vec![model_step(config, "toy-step", toy_model)?],
        Workload::MnistStep => vec![model_step(config, "mnist-step", mnist_model)?],
        Workload::GanStep => vec![gan_step(config, "gan-step", "gan-mnist")?],
        Workload::OganStep => vec![gan_step(config, "ogan-step", "ogan-mnist")?],
        Workload::Matmul => vec![matmul(config)?],
        Workload::Allreduce => allreduce(config)?,
        Workload::GloStep => vec![super::glann::glo_step(config)?],
        Workload::ImleSearch => vec![super::glann::imle_search(config)?],
    })
}

/// One optimiser update: clears the gradients, backpropagates `loss` and steps.
///
/// This is the only place the benchmarks touch the optimiser, so swapping in genflow's own
/// (`crate::optim`) changes this function and `new_optimizer` only.
pub fn adam_step(opt: &mut tch::nn::Optimizer, loss: &Tensor) -> Result<()> {
    opt.zero_grad();
    loss.f_backward()?;
    opt.step();
    Ok(())
}

/// Adam (`beta = (0.9, 0.999)`, `eps = 1e-8`) over every trainable variable of `vs`.
fn new_optimizer(vs: &VarStore) -> Result<tch::nn::Optimizer> {
    Ok(tch::nn::Adam::default().build(vs, LEARNING_RATE)?)
}

/// The SN conv i-ResNet block of the block workloads: ELU, kernels 3-1-3, activation first.
pub fn conv_block(p: &Path, shape: &BlockShape) -> Result<IResBlock> {
    let conv = ConvShape {
        channels: shape.channels,
        hidden: shape.hidden,
        kernels: vec![3, 1, 3],
        hw: (shape.size, shape.size),
    };
    let spectral = SpectralConfig {
        coeff: shape.coeff,
        n_power_iter: shape.power_iter,
    };
    Ok(IResBlock::new(ResidualNet::conv(
        p,
        &conv,
        ActivationKind::Elu,
        spectral,
        true,
    )?))
}

fn block_input(shape: &BlockShape, device: Device) -> Tensor {
    Tensor::randn(
        [shape.batch, shape.channels, shape.size, shape.size],
        (Kind::Float, device),
    )
}

fn series(terms: usize, backend: Backend) -> LogDetEstimator {
    LogDetEstimator::Series {
        terms,
        probe: Probe::Gaussian,
        backend,
    }
}

/// A training step of a flow on a fixed batch: `-mean(log p(x))`, backward, Adam.
struct Trainer {
    flow: Flow,
    vs: VarStore,
    x: Tensor,
}

impl Trainer {
    fn new(vs: VarStore, transform: Sequential, x: Tensor) -> Self {
        let base = Box::new(StandardNormal::new(&x.size()[1..]));
        Trainer {
            flow: Flow::new(transform, base),
            vs,
            x,
        }
    }

    fn stepper(
        &self,
        estimator: LogDetEstimator,
        seed: u64,
    ) -> Result<impl FnMut() -> Result<()> + '_> {
        let mut opt = new_optimizer(&self.vs)?;
        let mut ctx = FlowContext::train(estimator, seed);
        Ok(move || {
            let loss = -self.flow.log_prob(&self.x, &mut ctx)?.mean(Kind::Float);
            adam_step(&mut opt, &loss)
        })
    }
}

fn block_trainer(config: &BenchConfig) -> Result<Trainer> {
    let vs = VarStore::new(config.device);
    let mut transform = Sequential::new();
    transform.push(conv_block(&(vs.root() / "block"), &config.block)?);
    let x = block_input(&config.block, config.device);
    Ok(Trainer::new(vs, transform, x))
}

fn block_step(config: &BenchConfig) -> Result<WorkloadResult> {
    let trainer = block_trainer(config)?;
    let mut step = trainer.stepper(
        series(config.block.terms, config.backend),
        config.seed as u64,
    )?;
    let samples = repeat(config.device, config.warmup, config.samples, &mut step)?;
    WorkloadResult::from_samples("block-step", &samples)
}

/// A block with settled spectral norms (evaluation weights) and an input batch.
fn eval_block(config: &BenchConfig) -> Result<(VarStore, IResBlock, Tensor)> {
    let vs = VarStore::new(config.device);
    let block = conv_block(&(vs.root() / "block"), &config.block)?;
    block.g.refine_spectral_norms(REFINE_TOL, REFINE_MAX_ITER);
    let x = block_input(&config.block, config.device);
    Ok((vs, block, x))
}

fn block_forward(config: &BenchConfig) -> Result<WorkloadResult> {
    let (_vs, block, x) = eval_block(config)?;
    let mut ctx = FlowContext::eval(
        series(config.block.terms, config.backend),
        config.seed as u64,
    );
    let mut forward = || tch::no_grad(|| block.forward(&x, &mut ctx)).map(|_| ());
    let samples = repeat(config.device, config.warmup, config.samples, &mut forward)?;
    WorkloadResult::from_samples("block-forward", &samples)
}

fn block_inverse(config: &BenchConfig) -> Result<WorkloadResult> {
    let (_vs, block, x) = eval_block(config)?;
    let mut ctx = FlowContext::eval(LogDetEstimator::default(), config.seed as u64);
    ctx.inverse = config.inverse;
    let y = tch::no_grad(|| -> Result<Tensor> { Ok(&x + block.g.forward(&x, false)?) })?;
    let mut x_rec = None;
    let mut inverse = || -> Result<()> {
        ctx.inverse_stats = Default::default();
        x_rec = Some(block.inverse(&y, &mut ctx)?);
        Ok(())
    };
    let samples = repeat(config.device, config.warmup, config.samples, &mut inverse)?;
    let error = x_rec.map_or(f64::NAN, |r| (r - &x).abs().max().double_value(&[]));
    let stats = ctx.inverse_stats;
    let result = WorkloadResult::from_samples("block-inverse", &samples)?;
    let per_iteration = result.median.unwrap_or(f64::NAN) / stats.max_iters.max(1) as f64;
    Ok(result
        .with("iterations", stats.max_iters)
        .with("residual", stats.max_residual)
        .with("error", error)
        .with("per_iteration_ms", per_iteration))
}

/// Cost of one series term in a training step with `backend`: paired samples of a step with
/// `1` and `1 + terms` terms, `(t_hi - t_lo) / terms` each, so drifting machine load cancels.
fn logdet_term(config: &BenchConfig, backend: Backend) -> Result<WorkloadResult> {
    let high = LOW_TERMS + config.block.terms;
    let trainer = block_trainer(config)?;
    let seed = config.seed as u64;
    let mut low_step = trainer.stepper(series(LOW_TERMS, backend), seed)?;
    let mut high_step = trainer.stepper(series(high, backend), seed)?;
    for _ in 0..config.warmup {
        low_step()?;
        high_step()?;
    }
    let per_term = (0..config.samples)
        .map(|_| {
            let lo = measure(config.device, &mut low_step)?;
            let hi = measure(config.device, &mut high_step)?;
            Ok(hi.difference(lo, (high - LOW_TERMS) as f64))
        })
        .collect::<Result<Vec<_>>>()?;
    let name = match backend {
        Backend::Tangent => "logdet-term-tangent",
        Backend::Vjp => "logdet-term-vjp",
    };
    Ok(WorkloadResult::from_samples(name, &per_term)?.with("terms", vec![LOW_TERMS, high]))
}

/// A model for a `*-step` workload: the flow with the store that owns its parameters, a training
/// batch and the log-det estimator it trains with.
pub struct StepModel {
    pub vs: VarStore,
    pub flow: Flow,
    pub input: Tensor,
    pub estimator: LogDetEstimator,
}

/// Builds a [`StepModel`].
pub type ModelBuilder = fn(&BenchConfig) -> Result<StepModel>;

/// The `iresnet-toy` preset's model ([`VectorFlow`]: ActNorm and an i-ResNet block around an MLP
/// `2-w-w-w-2` with LipSwish, c = 0.9, 1 power iteration, per block) with `config.toy`'s block
/// count, width and batch, trained with the preset's estimator (exact log-det) on `N(0, I)` points.
pub fn toy_model(config: &BenchConfig) -> Result<StepModel> {
    let TaskConfig::ToyDensity(preset) = JobConfig::resolve("iresnet-toy", &[])?.task else {
        return Err(Error::config(
            "the iresnet-toy preset is not a toy-density task",
        ));
    };
    let toy = config.toy;
    let model = VectorFlowConfig {
        blocks: toy.blocks,
        hidden: vec![toy.width; 3],
        ..preset.model
    };
    let vs = VarStore::new(config.device);
    let VectorFlow { flow } = VectorFlow::new(&vs.root(), &model, 2)?;
    let input = Tensor::randn([toy.batch, 2], (Kind::Float, config.device));
    Ok(StepModel {
        vs,
        flow,
        input,
        estimator: preset.train.logdet,
    })
}

/// The `iresnet-mnist` preset's model ([`ImageFlow`]: logit transform, three scales of ActNorm and
/// conv i-ResNet blocks with hidden width 32, LipSwish; SPEC section 1) with `config.mnist_batch`
/// uniform images in `[0, 1)` (what dequantised MNIST looks like to the flow). The log-det is the
/// series with [`MNIST_TERMS`] terms, the expected cost of the preset's Russian roulette (2 terms +
/// Geometric(1/2) more), so that the timing does not depend on random draws (nor does PyTorch's).
pub fn mnist_model(config: &BenchConfig) -> Result<StepModel> {
    let TaskConfig::ImageDensity(preset) = JobConfig::resolve("iresnet-mnist", &[])?.task else {
        return Err(Error::config(
            "the iresnet-mnist preset is not an image-density task",
        ));
    };
    let model_config = &preset.model;
    let vs = VarStore::new(config.device);
    let ImageFlow { flow, .. } = ImageFlow::new(&vs.root(), model_config)?;
    let [c, h, w] = model_config.in_shape;
    let input = Tensor::rand([config.mnist_batch, c, h, w], (Kind::Float, config.device));
    Ok(StepModel {
        vs,
        flow,
        input,
        estimator: series(MNIST_TERMS, config.backend),
    })
}

fn model_step(config: &BenchConfig, name: &str, builder: ModelBuilder) -> Result<WorkloadResult> {
    let model = builder(config)?;
    let trainer = Trainer {
        flow: model.flow,
        vs: model.vs,
        x: model.input,
    };
    let mut step = trainer.stepper(model.estimator, config.seed as u64)?;
    let samples = repeat(config.device, config.warmup, config.samples, &mut step)?;
    WorkloadResult::from_samples(name, &samples)
}

/// The real items of a GAN workload: the same batch every step.
struct FixedBatch(Tensor);

impl RealData for FixedBatch {
    fn batch(&mut self, _step: u64) -> Result<Tensor> {
        Ok(self.0.shallow_clone())
    }
}

/// One full update of the image-GAN preset `preset` (its model, losses, update rule and
/// optimiser; what one step of `genflow train` does, without the moving average) on a batch of
/// `config.mnist_batch` uniform images in `[-1, 1]`, with fresh latents every step.
fn gan_step(config: &BenchConfig, name: &str, preset: &str) -> Result<WorkloadResult> {
    let job = JobConfig::resolve(preset, &[])?;
    let TaskConfig::ImageGan(task) = &job.task else {
        return Err(Error::config(format!(
            "the {preset} preset is not an image-gan task"
        )));
    };
    let vs = VarStore::new(config.device);
    let gan = Gan::conv(&vs.root(), &task.model)?;
    let [c, h, w] = task.model.image_shape;
    let x = Tensor::rand([config.mnist_batch, c, h, w], (Kind::Float, config.device)) * 2.0 - 1.0;
    let steps = (config.warmup + config.samples) as u64;
    let mut optimizer = Optimizer::new(&vs, &job.run.optim.for_run(steps))?;
    let mut objective = GanObjective {
        losses: GanLosses::new(&gan, &task.train),
        rule: task.train.update,
        data: FixedBatch(x),
        seed: config.seed as u64,
    };
    let mut step = 0u64;
    let mut update = || -> Result<()> {
        objective.update(step, &mut optimizer)?;
        step += 1;
        Ok(())
    };
    let samples = repeat(config.device, config.warmup, config.samples, &mut update)?;
    Ok(WorkloadResult::from_samples(name, &samples)?.with("update", task.train.update.name()))
}

fn matmul(config: &BenchConfig) -> Result<WorkloadResult> {
    let n = config.matmul_n;
    let a = Tensor::randn([n, n], (Kind::Float, config.device));
    let b = Tensor::randn([n, n], (Kind::Float, config.device));
    let mut mm = || -> Result<()> {
        let c = a.f_matmul(&b)?;
        drop(c);
        Ok(())
    };
    let samples = repeat(config.device, config.warmup, config.samples, &mut mm)?;
    let result = WorkloadResult::from_samples("matmul-1024", &samples)?;
    let flop = 2.0 * (n as f64).powi(3);
    let gflops = |ms: Option<f64>| ms.map(|ms| flop / (ms * 1e-3) / 1e9);
    let (median, best) = (gflops(result.median), gflops(result.min));
    Ok(result
        .with("gflops", median)
        .with("gflops_max", best)
        .with("n", n))
}

/// Ranks of the `allreduce` workload.
const ALLREDUCE_RANKS: usize = 2;

/// `allreduce`: [`ALLREDUCE_RANKS`] ranks in threads of this process, each with its own Gloo
/// process group over TCP loopback, time `config.samples` all-reduces of each size (after
/// [`crate::distributed::bench::WARMUP`] untimed ones); one result per size, from rank 0 (a
/// round's time is the slowest rank's).
fn allreduce(config: &BenchConfig) -> Result<Vec<WorkloadResult>> {
    use crate::distributed::{bench, launch::free_port, Backend, ProcessGroup};
    let port = free_port()?;
    let timeout = std::time::Duration::from_secs(120);
    let ranks: Vec<_> = (0..ALLREDUCE_RANKS)
        .map(|rank| {
            let (sizes, rounds) = (config.allreduce_mb.clone(), config.samples);
            std::thread::spawn(move || -> Result<Vec<bench::BandwidthRow>> {
                let pg = ProcessGroup::new(
                    rank,
                    ALLREDUCE_RANKS,
                    "127.0.0.1",
                    port,
                    Backend::Gloo,
                    timeout,
                )?;
                bench::allreduce_bandwidth(&pg, &sizes, rounds)
            })
        })
        .collect();
    let mut rows = Vec::new();
    for (rank, handle) in ranks.into_iter().enumerate() {
        let result = handle
            .join()
            .map_err(|_| Error::distributed(format!("all-reduce bench rank {rank} panicked")))??;
        if rank == 0 {
            rows = result;
        }
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let ms = |s: f64| Some(s * 1e3);
            WorkloadResult {
                name: format!("allreduce-{}MB", row.mb),
                unit: Some("ms".into()),
                median: ms(row.median_s),
                min: ms(row.min_s),
                max: ms(row.max_s),
                samples: row.rounds,
                cpu_median: None,
                peak_rss_mb: None,
                rss_increase_mb: None,
                skipped: None,
                extra: Default::default(),
            }
            .with("mb", row.mb)
            .with("bytes", row.bytes)
            .with("ranks", ALLREDUCE_RANKS)
            .with("backend", "gloo")
            .with("algbw_gb_s", row.algbw_gb_s)
            .with("busbw_gb_s", row.busbw_gb_s)
        })
        .collect())
}

impl std::fmt::Debug for StepModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepModel")
            .field("flow", &self.flow)
            .field("input", &self.input.size())
            .field("estimator", &self.estimator)
            .finish()
    }
}
