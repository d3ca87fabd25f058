//! The GLANN workloads: a GLO training step and the IMLE nearest-neighbour search.
//!
//! * `glo-step`: one step of the `glann-mnist` preset's GLO phase: a batch of 128 images
//!   `[1, 28, 28]` and their codes from a table of `glann.codes` (60000) x 64, the official
//!   generator, the Laplacian-pyramid loss, backward, genflow's Adam with the preset's groups
//!   (dense over the code table, as the official `nn.Embedding`), and the projection of the codes
//!   onto the sphere.
//! * `imle-search`: [`crate::glann::search::nearest`] of `glann.codes` (60000) codes among
//!   `glann.candidates` (600000) candidates, 64 dimensions, with the default blocks.
//!
//! `benches/pytorch/glann_bench.py` runs both in PyTorch.

use super::timing::repeat;
use super::{BenchConfig, WorkloadResult};
use crate::glann::codes::project_to_sphere;
use crate::glann::search::{nearest, Blocks, DEFAULT_BLOCK_ENTRIES};
use crate::glann::GlannModel;
use crate::optim::Optimizer;
use crate::tasks::{JobConfig, TaskConfig};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Kind, Tensor};

/// The sizes of the GLANN workloads.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GlannShape {
    /// Codes (training images) of `glo-step`'s table and `imle-search`'s queries.
    pub codes: i64,
    /// Candidates of `imle-search`.
    pub candidates: i64,
    /// Images per `glo-step` batch.
    pub batch: i64,
}

impl Default for GlannShape {
    /// MNIST's 60000 codes, 10 candidates per code, the preset's batch of 128.
    fn default() -> Self {
        GlannShape {
            codes: 60000,
            candidates: 600000,
            batch: 128,
        }
    }
}

/// `glo-step` (see the module docs).
pub fn glo_step(config: &BenchConfig) -> Result<WorkloadResult> {
    let job = JobConfig::resolve("glann-mnist", &[])?;
    let TaskConfig::Glann(preset) = &job.task else {
        return Err(Error::config("the glann-mnist preset is not a glann task"));
    };
    let shape = config.glann;
    let device = config.device;
    let vs = VarStore::new(device);
    let model = GlannModel::new(&vs.root(), shape.codes, &preset.model)?;
    let [c, h, w] = preset.model.generator.out_shape;
    let images = Tensor::f_rand([shape.batch, c, h, w], (Kind::Float, device))?;
    let index = Tensor::f_randint(shape.codes, [shape.batch], (Kind::Int64, device))?;
    let mut optimizer = Optimizer::new(&vs, &job.run.optim)?;
    let mut step = || -> Result<()> {
        optimizer.zero_grad();
        let loss = model.glo_loss(&preset.loss, &images, &index)?;
        crate::train::descend(&mut optimizer, &loss, Vec::new())?;
        project_to_sphere(&mut model.codes.shallow_clone())
    };
    let samples = repeat(device, config.warmup, config.samples, &mut step)?;
    Ok(WorkloadResult::from_samples("glo-step", &samples)?
        .with("codes", shape.codes)
        .with("batch", shape.batch))
}

/// `imle-search` (see the module docs).
pub fn imle_search(config: &BenchConfig) -> Result<WorkloadResult> {
    let shape = config.glann;
    let options = (Kind::Float, config.device);
    let d = 64;
    let mut codes = Tensor::f_randn([shape.codes, d], options)?;
    project_to_sphere(&mut codes)?;
    let candidates = Tensor::f_randn([shape.candidates, d], options)?.f_mul_scalar(0.125)?;
    let blocks = Blocks::within(DEFAULT_BLOCK_ENTRIES, shape.codes, shape.candidates)?;
    let mut checksum = 0;
    let mut search = || -> Result<()> {
        let found = nearest(&codes, &candidates, blocks)?;
        checksum = i64::try_from(found.index.f_sum(Kind::Int64)?)?;
        Ok(())
    };
    let samples = repeat(config.device, config.warmup, config.samples, &mut search)?;
    let result = WorkloadResult::from_samples("imle-search", &samples)?;
    let flop = 2.0 * (shape.codes * shape.candidates * d) as f64;
    let gflops = result.median.map(|ms| flop / (ms * 1e-3) / 1e9);
    Ok(result
        .with("codes", shape.codes)
        .with("candidates", shape.candidates)
        .with("block", vec![blocks.queries, blocks.candidates])
        .with(
            "working_mib",
            blocks.working_bytes(shape.candidates, 4) as f64 / (1 << 20) as f64,
        )
        .with("gflops", gflops)
        .with("index_sum", checksum))
}
