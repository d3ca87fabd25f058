//! The transform abstraction: an invertible map with its log-determinant, and sequential composition.

use crate::linalg::logdet::LogDetEstimator;
use crate::nn::ResidualNet;
use crate::Result;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tch::Tensor;

/// Settings of the Banach fixed-point inversion `x_{n+1} = y - g(x_n)` (Behrmann et al. 2019, Alg. 1).
///
/// Iteration stops when `max|x_{n+1} - x_n| / (atol + rtol |y|) < 1` (the Residual Flows criterion)
/// or after `max_iter` iterations.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FixedPointConfig {
    pub atol: f64,
    pub rtol: f64,
    pub max_iter: usize,
}

impl Default for FixedPointConfig {
    fn default() -> Self {
        FixedPointConfig {
            atol: 1e-5,
            rtol: 1e-5,
            max_iter: 100,
        }
    }
}

/// What the inversions of one call did: the most iterations any block needed and the largest final
/// relative residual `max|x_{n+1} - x_n| / (atol + rtol |y|)` (below 1 means converged).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct InverseStats {
    pub max_iters: usize,
    pub max_residual: f64,
    /// Block inversions done.
    pub blocks: usize,
    /// Block inversions that stopped at `max_iter` with a residual of 1 or more.
    pub unconverged: usize,
}

impl InverseStats {
    /// Folds the result of one block's inversion into the running summary.
    pub fn record(&mut self, iters: usize, residual: f64) {
        self.max_iters = self.max_iters.max(iters);
        self.max_residual = self.max_residual.max(residual);
        self.blocks += 1;
        if residual.is_nan() || residual >= 1.0 {
            self.unconverged += 1;
        }
    }

    /// Whether every inversion converged (its final relative residual is below 1).
    pub fn converged(&self) -> bool {
        self.unconverged == 0
    }
}

/// The fixed-point inversions of one call, item by item (the batch's first dimension): for each
/// item the most iterations any block needed before the item's own residual fell below 1, and its
/// largest final residual over the blocks. An item converged when its residual is below 1.
#[derive(Debug)]
pub struct ItemStats {
    /// Iterations per item, `[batch]` (int64).
    pub iters: Tensor,
    /// Final relative residual per item, `[batch]` (f64).
    pub residual: Tensor,
}

impl ItemStats {
    /// Folds one block's per-item results into the running maxima.
    pub fn record(stats: &mut Option<ItemStats>, iters: Tensor, residual: Tensor) {
        *stats = Some(match stats.take() {
            None => ItemStats { iters, residual },
            Some(s) => ItemStats {
                iters: s.iters.maximum(&iters),
                residual: s.residual.maximum(&residual),
            },
        });
    }

    /// How many items did not converge (final residual 1 or more).
    pub fn unconverged(&self) -> Result<usize> {
        Ok(self.rows()?.iter().filter(|r| !r.2).count())
    }

    /// `(iterations, residual, converged)` per item, on the CPU.
    pub fn rows(&self) -> Result<Vec<(i64, f64, bool)>> {
        let iters = Vec::<i64>::try_from(self.iters.to_device(tch::Device::Cpu))?;
        let residual = Vec::<f64>::try_from(self.residual.to_device(tch::Device::Cpu))?;
        Ok(iters
            .into_iter()
            .zip(residual)
            .map(|(i, r)| (i, r, r < 1.0))
            .collect())
    }
}

/// Per-call state shared by every transform of a flow: training or evaluation mode, the
/// log-determinant estimator, the inversion settings, a seeded random source (Russian roulette draws)
/// and the statistics of the inversions done so far.
#[derive(Debug)]
pub struct FlowContext {
    /// Training mode: power iterations update their vectors, ActNorm initialises from data.
    pub train: bool,
    /// How i-ResNet blocks estimate `ln det(I + J_g)`.
    pub logdet: LogDetEstimator,
    /// How i-ResNet blocks are inverted.
    pub inverse: FixedPointConfig,
    /// Random source for discrete draws (roulette term counts). Gaussian probes use libtorch's
    /// generator, seeded with `tch::manual_seed`.
    pub rng: StdRng,
    /// Summary of the fixed-point inversions done with this context.
    pub inverse_stats: InverseStats,
    /// The same, item by item, for the last batch inverted (`None` before any inversion).
    pub item_stats: Option<ItemStats>,
    /// Whether `forward` must compute log-determinants; `false` when only the map is needed (an
    /// invertible feature extractor), and layers whose log-det is costly skip it (returning
    /// zeros).
    pub compute_logdet: bool,
}

impl FlowContext {
    /// A context in evaluation mode with the given estimator, default inversion settings and seed.
    pub fn eval(logdet: LogDetEstimator, seed: u64) -> Self {
        FlowContext {
            train: false,
            logdet,
            inverse: FixedPointConfig::default(),
            rng: StdRng::seed_from_u64(seed),
            inverse_stats: InverseStats::default(),
            item_stats: None,
            compute_logdet: true,
        }
    }

    /// A context for using a flow as a plain invertible map, without log-determinants, in
    /// training or evaluation mode.
    pub fn without_logdet(train: bool) -> Self {
        FlowContext {
            train,
            compute_logdet: false,
            ..Self::eval(LogDetEstimator::Exact, 0)
        }
    }

    /// A context in training mode with the given estimator and seed.
    pub fn train(logdet: LogDetEstimator, seed: u64) -> Self {
        FlowContext {
            train: true,
            ..Self::eval(logdet, seed)
        }
    }
}

/// How a flow is evaluated (`[eval]` of the flow tasks): the log-det estimator of test
/// log-likelihoods, the fixed-point inversion, and the temperature of samples.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowEvalConfig {
    /// The log-det estimator of test log-likelihoods (exact by default; for high dimensions a
    /// roulette with many exact terms).
    #[serde(default = "exact")]
    pub logdet: LogDetEstimator,
    /// The fixed-point inversion of samples and reconstructions.
    #[serde(default)]
    pub inverse: FixedPointConfig,
    /// Temperature of samples drawn for pictures (the base's standard deviation is scaled by it).
    #[serde(default = "one")]
    pub temperature: f64,
}

fn exact() -> LogDetEstimator {
    LogDetEstimator::Exact
}

fn one() -> f64 {
    1.0
}

impl Default for FlowEvalConfig {
    fn default() -> Self {
        FlowEvalConfig {
            logdet: LogDetEstimator::Exact,
            inverse: FixedPointConfig::default(),
            temperature: 1.0,
        }
    }
}

impl FlowEvalConfig {
    /// Checks the estimator and the temperature.
    pub fn validate(&self) -> Result<()> {
        self.logdet.validate()?;
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(crate::Error::config(format!(
                "eval.temperature must be a finite number >= 0, got {}",
                self.temperature
            )));
        }
        Ok(())
    }

    /// An evaluation context with this estimator and inversion, seeded with `seed`.
    pub fn context(&self, seed: u64) -> FlowContext {
        let mut ctx = FlowContext::eval(self.logdet, seed);
        ctx.inverse = self.inverse;
        ctx
    }
}

/// The flows' own training settings (`logdet` in `[train]`): the log-det estimator of the
/// training loss.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowTrainConfig {
    /// The log-det estimator used for the training loss.
    #[serde(default)]
    pub logdet: LogDetEstimator,
}

/// An invertible map `y = f(x)` acting on a batch (first dimension), with `ln |det J_f(x)|` per sample.
///
/// Every layer of genflow implements this contract, and `tests/transform_contract.rs` runs each one
/// through the same checks: shapes, inverse round trip, log-det against the exact Jacobian, and
/// gradients reaching every parameter.
pub trait Transform: std::fmt::Debug {
    /// `(f(x), ln|det J_f(x)|)`; the log-det has shape `[batch]`.
    fn forward(&self, x: &Tensor, ctx: &mut FlowContext) -> Result<(Tensor, Tensor)>;
    /// `f^{-1}(y)`.
    fn inverse(&self, y: &Tensor, ctx: &mut FlowContext) -> Result<Tensor>;
    /// The Lipschitz-constrained residual functions inside this transform, for diagnostics
    /// (`Lip(g)`) and spectral-norm refinement; empty for layers without one.
    fn residual_nets(&self) -> Vec<&ResidualNet> {
        Vec::new()
    }
    /// A short human-readable name (for summaries and error messages).
    fn name(&self) -> String {
        let full = format!("{self:?}");
        full.split(|c: char| !c.is_alphanumeric())
            .next()
            .unwrap_or("transform")
            .to_string()
    }
}

/// Transforms applied one after another: `f = f_n o ... o f_1`; log-dets add up and the inverse runs
/// in reverse order.
#[derive(Debug, Default)]
pub struct Sequential {
    pub layers: Vec<Box<dyn Transform>>,
}

impl Sequential {
    /// An empty composition (the identity).
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends a transform.
    pub fn push(&mut self, layer: impl Transform + 'static) {
        self.layers.push(Box::new(layer));
    }
    /// Appends a boxed transform.
    pub fn push_boxed(&mut self, layer: Box<dyn Transform>) {
        self.layers.push(layer);
    }
    /// Number of transforms.
    pub fn len(&self) -> usize {
        self.layers.len()
    }
    /// Whether the composition is the identity.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl Transform for Sequential {
    fn forward(&self, x: &Tensor, ctx: &mut FlowContext) -> Result<(Tensor, Tensor)> {
        let batch = x.size().first().copied().unwrap_or(1);
        let mut logdet = Tensor::zeros([batch], (x.kind(), x.device()));
        let mut h = x.shallow_clone();
        for layer in &self.layers {
            let (next, ld) = layer.forward(&h, ctx)?;
            logdet = &logdet + ld;
            h = next;
        }
        Ok((h, logdet))
    }

    fn residual_nets(&self) -> Vec<&ResidualNet> {
        self.layers.iter().flat_map(|l| l.residual_nets()).collect()
    }

    fn inverse(&self, y: &Tensor, ctx: &mut FlowContext) -> Result<Tensor> {
        let mut h = y.shallow_clone();
        for layer in self.layers.iter().rev() {
            h = layer.inverse(&h, ctx)?;
        }
        Ok(h)
    }
}
