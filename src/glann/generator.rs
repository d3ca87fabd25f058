//! GLO's generator: codes on the unit sphere to images, with linear layers and transposed convs.
//!
//! The architecture of the official GLANN code (`yedidh/glann`, `model._netG`), which follows the
//! InfoGAN-style generator of Lucic et al. ("Are GANs Created Equal?", NeurIPS 2018) that the
//! GLANN paper compares against, generalised to any number of upsamplings:
//!
//! ```text
//! z / |z|  ->  Linear(n_z, hidden) -> LeakyReLU(0.2)
//!          ->  Linear(hidden, c_0 h_0 w_0) -> [BatchNorm] -> LeakyReLU(0.2) -> reshape [c_0, h_0, w_0]
//!          ->  per further channel count c_k: ConvTranspose(4x4, stride 2, pad 1) -> [BatchNorm] -> LeakyReLU(0.2)
//!          ->  ConvTranspose(4x4, stride 2, pad 1) to C channels -> sigmoid
//! ```
//!
//! With `channels = [c_0, ..., c_{K-1}]` there are `K` transposed convs, each doubling the size,
//! so `h_0 = H / 2^K`, `w_0 = W / 2^K` (`H` and `W` must be divisible by `2^K`). The official
//! MNIST generator is `hidden = 1024`, `channels = [128, 64]` (7x7 -> 14x14 -> 28x28) with batch
//! norm. The code is divided by its norm first (the norm treated as a constant in the gradient, as
//! in the official code), so codes off the sphere (a mapper's outputs, Gaussian samples) are
//! projected onto it. Weights are drawn from Xavier-normal with gain `sqrt(2)` as in the official
//! `weights_init`; biases start at zero, batch-norm scales at one.
//!
//! ```
//! use genflow::glann::{Generator, GeneratorConfig};
//! use genflow::tch::{nn::VarStore, Device, Kind, Tensor};
//! let vs = VarStore::new(Device::Cpu);
//! let config = GeneratorConfig { out_shape: [1, 28, 28], hidden: 32, channels: vec![16, 8], batch_norm: true };
//! let g = Generator::new(&(vs.root() / "generator"), 64, &config)?;
//! let z = Tensor::randn([5, 64], (Kind::Float, Device::Cpu));
//! let x = g.forward(&z, false)?;
//! assert_eq!(x.size(), [5, 1, 28, 28]);
//! # Ok::<(), genflow::Error>(())
//! ```

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT, Path};
use tch::Tensor;

/// Slope of the LeakyReLU for negative inputs (official `nn.LeakyReLU(0.2)`).
const LEAKY_SLOPE: f64 = 0.2;
/// Kernel, stride and padding of the transposed convs (each doubles the size).
const KERNEL: i64 = 4;

/// The generator's layout (`[model.generator]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// The images it makes, `[C, H, W]`.
    pub out_shape: [i64; 3],
    /// Width of the first linear layer.
    pub hidden: i64,
    /// Channels of the feature maps, coarsest first: one transposed conv per entry.
    pub channels: Vec<i64>,
    /// Batch norm after the second linear layer and every hidden transposed conv.
    #[serde(default = "yes")]
    pub batch_norm: bool,
}

fn yes() -> bool {
    true
}

impl GeneratorConfig {
    /// The size `[h_0, w_0]` of the first feature map.
    fn first_map(&self) -> [i64; 2] {
        let scale = 1i64 << self.channels.len();
        [self.out_shape[1] / scale, self.out_shape[2] / scale]
    }

    /// Checks sizes; the message names the key.
    pub fn validate(&self) -> Result<()> {
        let [c, h, w] = self.out_shape;
        if c < 1 || self.hidden < 1 || self.channels.iter().any(|&k| k < 1) {
            return Err(Error::config(format!(
                "model.generator: out_shape channels, hidden and channels must be positive, got \
                 out_shape {:?}, hidden {}, channels {:?}",
                self.out_shape, self.hidden, self.channels
            )));
        }
        if self.channels.is_empty() || self.channels.len() > 16 {
            return Err(Error::config(format!(
                "model.generator.channels: give 1 to 16 channel counts (one transposed conv each), \
                 got {:?}",
                self.channels
            )));
        }
        let scale = 1i64 << self.channels.len();
        if h < scale || w < scale || h % scale != 0 || w % scale != 0 {
            return Err(Error::config(format!(
                "model.generator: {} transposed convs double the size {} times, so the image \
                 height and width must be multiples of {scale}, got {h} x {w}; change \
                 model.generator.channels",
                self.channels.len() + 1,
                self.channels.len(),
            )));
        }
        Ok(())
    }
}

/// The generator network (see the module docs).
#[derive(Debug)]
pub struct Generator {
    linear_in: nn::Linear,
    linear_map: nn::Linear,
    norm_map: Option<nn::BatchNorm>,
    convs: Vec<(nn::ConvTranspose2D, Option<nn::BatchNorm>)>,
    first: [i64; 3],
    n_z: i64,
}

/// `max(x, 0.2 x)`, as a PReLU with a constant slope (one fused op).
fn leaky_relu(x: &Tensor) -> Result<Tensor> {
    let slope = Tensor::f_full([1], LEAKY_SLOPE, (x.kind(), x.device()))?;
    Ok(x.f_prelu(&slope)?)
}

/// Xavier-normal initialisation with gain `sqrt(2)`: `N(0, 2 * 2 / (fan_in + fan_out))`.
fn xavier(fan_in: i64, fan_out: i64) -> nn::Init {
    nn::Init::Randn {
        mean: 0.0,
        stdev: (4.0 / (fan_in + fan_out) as f64).sqrt(),
    }
}

/// A batch norm with PyTorch's defaults (scale 1, shift 0, momentum 0.1, eps 1e-5).
pub(crate) fn batch_norm(p: &Path, features: i64, two_d: bool) -> nn::BatchNorm {
    let config = nn::BatchNormConfig {
        ws_init: nn::Init::Const(1.0),
        ..Default::default()
    };
    if two_d {
        nn::batch_norm2d(p, features, config)
    } else {
        nn::batch_norm1d(p, features, config)
    }
}

/// A bias-free linear layer with the Xavier-normal initialisation of the module docs.
pub(crate) fn linear(p: &Path, fan_in: i64, fan_out: i64) -> nn::Linear {
    nn::linear(
        p,
        fan_in,
        fan_out,
        nn::LinearConfig {
            ws_init: xavier(fan_in, fan_out),
            bs_init: None,
            bias: false,
        },
    )
}

impl Generator {
    /// A generator of `config.out_shape` images from `n_z`-dimensional codes, its parameters
    /// under `p`.
    pub fn new(p: &Path, n_z: i64, config: &GeneratorConfig) -> Result<Self> {
        config.validate()?;
        if n_z < 1 {
            return Err(Error::config(format!(
                "model.n_z must be positive, got {n_z}"
            )));
        }
        let [h0, w0] = config.first_map();
        let c0 = config.channels[0];
        let map = c0 * h0 * w0;
        let mut outs: Vec<i64> = config.channels[1..].to_vec();
        outs.push(config.out_shape[0]);
        let mut convs = Vec::new();
        for (k, (&cin, &cout)) in config.channels.iter().zip(&outs).enumerate() {
            let area = KERNEL * KERNEL;
            let conv = nn::conv_transpose2d(
                p / format!("conv{k}"),
                cin,
                cout,
                KERNEL,
                nn::ConvTransposeConfig {
                    stride: 2,
                    padding: 1,
                    ws_init: xavier(cout * area, cin * area),
                    bs_init: nn::Init::Const(0.0),
                    ..Default::default()
                },
            );
            let hidden = k + 1 < config.channels.len();
            let norm = (hidden && config.batch_norm)
                .then(|| batch_norm(&(p / format!("norm{k}")), cout, true));
            convs.push((conv, norm));
        }
        Ok(Generator {
            linear_in: linear(&(p / "linear_in"), n_z, config.hidden),
            linear_map: linear(&(p / "linear_map"), config.hidden, map),
            norm_map: config
                .batch_norm
                .then(|| batch_norm(&(p / "norm_map"), map, false)),
            convs,
            first: [c0, h0, w0],
            n_z,
        })
    }

    /// Images `[N, C, H, W]` in `(0, 1)` of codes `z` `[N, n_z]` (projected onto the unit sphere
    /// first); `train`: batch norm with batch statistics (updating the running ones).
    pub fn forward(&self, z: &Tensor, train: bool) -> Result<Tensor> {
        let size = z.size();
        if size.len() != 2 || size[1] != self.n_z || size[0] < 1 {
            return Err(Error::shape(format!(
                "the generator takes codes [N >= 1, {}], got {size:?}",
                self.n_z
            )));
        }
        let z = z.f_div(&super::codes::row_norms(z)?.f_detach()?)?;
        let h = leaky_relu(&self.linear_in.forward_t(&z, train))?;
        let mut h = self.linear_map.forward_t(&h, train);
        if let Some(norm) = &self.norm_map {
            h = norm.forward_t(&h, train);
        }
        let [c0, h0, w0] = self.first;
        let mut x = leaky_relu(&h)?.f_reshape([size[0], c0, h0, w0])?;
        let last = self.convs.len() - 1;
        for (k, (conv, norm)) in self.convs.iter().enumerate() {
            x = conv.forward_t(&x, train);
            if let Some(norm) = norm {
                x = norm.forward_t(&x, train);
            }
            x = if k == last {
                x.f_sigmoid()?
            } else {
                leaky_relu(&x)?
            };
        }
        Ok(x)
    }

    /// The code dimension `n_z`.
    pub fn n_z(&self) -> i64 {
        self.n_z
    }
}
