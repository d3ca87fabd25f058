//! The generator and discriminator networks: MLPs for vectors (the 2-D toys) and DCGAN-style
//! convolutional nets for images (Radford et al. 2016; the O-GAN reference, Su 2019).
//!
//! * **MLP** ([`MlpGanConfig`]): `G: z -> [Linear -> (norm) -> ReLU] x k -> Linear`, `D: x ->
//!   [Linear -> LeakyReLU(0.2)] x k -> Linear`, the same hidden widths for both.
//! * **Conv** ([`ConvGanConfig`]) with `L = levels` stride-2 layers, base width `w`, kernel `k`,
//!   padding `(k - 1) / 2` (output padding `k mod 2` for the transposed convs, so each layer
//!   exactly halves or doubles the size) and images `[C, H, W]` with `H, W` divisible by `2^L`:
//!   - `D`: `conv(C -> w) -> LeakyReLU(0.2)`, then for `i = 1..L`: `conv(w 2^(i-1) -> w 2^i) ->
//!     BN -> LeakyReLU(0.2)`, then `Linear(w 2^(L-1) H W / 4^L -> n_out)`;
//!   - `G`: `Linear(z -> w 2^(L-1) H W / 4^L) -> norm -> ReLU` at size `H/2^L x W/2^L`, then
//!     `L - 1` times `convT(c -> c/2) -> norm -> ReLU`, then `convT(w -> C) -> tanh`.
//!
//!   With `levels = 5`, `width = 64`, `kernel = 5`, `z_dim = 128` on 128x128 RGB this is the O-GAN
//!   reference (`bojone/o-gan`, `o_gan_celeba.py`: encoder channels 64..1024, generator from
//!   4x4x1024); with `levels = 2`, `width = 64`, `kernel = 4` on 28x28 it is the usual DCGAN for
//!   MNIST. The reference pads its stride-2 convs TensorFlow-style ("same", asymmetric); here the
//!   padding is symmetric (PyTorch), which gives the same sizes.
//!
//! Options: batch norm in `D` (off for the first layer, as DCGAN), spectral normalisation of every
//! `D` layer (`W / sigma(W)`, Miyato et al. 2018, [`crate::nn::SpectralLinear::unit`]), and in `G`
//! batch norm, none, or *self-modulated* batch norm (Chen et al. 2019, "On Self Modulation for
//! Generative Adversarial Networks", eq. 2; the O-GAN reference's `SelfModulatedBatchNormalization`):
//! `h -> (1 + gamma(z)) BN(h) + beta(z)`, `BN` without its own affine parameters and `gamma`,
//! `beta` each an MLP `z -> ReLU(Linear(z_dim -> z_dim)) -> Linear(-> channels)`.
//!
//! O-GAN ([`MlpGanConfig::encoder`], [`ConvGanConfig::encoder`]): `D` outputs `n_out = z_dim`
//! values `E(x)` and its score is their mean; otherwise `n_out = 1`.
//!
//! Weights: conv, transposed-conv and linear weights of the conv nets `N(0, 0.02)`, biases 0,
//! batch-norm scales 1 (DCGAN, and the reference's `RandomNormal(0, 0.02)`); the MLPs keep
//! PyTorch's default initialisation. Parameters live under `generator.` and `discriminator.`, so
//! optimiser groups and the moving average can tell the nets apart.

use crate::nn::{Geometry, SpectralLinear};
use crate::seeds::{derived_seed, Stream};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, ModuleT, Path};
use tch::{Kind, Tensor};

/// The VarStore prefix of the generator's parameters.
pub const GENERATOR: &str = "generator";
/// The VarStore prefix of the discriminator's parameters.
pub const DISCRIMINATOR: &str = "discriminator";
/// Slope of the discriminators' LeakyReLU (DCGAN, the O-GAN reference).
const LEAKY_SLOPE: f64 = 0.2;
/// Standard deviation of the conv nets' initial weights.
const INIT_STD: f64 = 0.02;

/// The normalisation of the generator's hidden layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum GeneratorNorm {
    /// No normalisation.
    None,
    /// Batch normalisation with learned scale and shift.
    #[default]
    Batch,
    /// Batch normalisation whose scale and shift are functions of `z` (Chen et al. 2019).
    SelfModulated,
}

/// The MLP generator and discriminator for vectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpGanConfig {
    /// Dimension of the latent `z ~ N(0, I)`.
    pub z_dim: i64,
    /// Hidden widths of both nets.
    pub hidden: Vec<i64>,
    /// Normalisation of the generator's hidden layers (default none).
    #[serde(default = "no_norm")]
    pub generator_norm: GeneratorNorm,
    /// Spectral normalisation of every discriminator layer.
    #[serde(default)]
    pub spectral_norm: bool,
    /// O-GAN: the discriminator outputs `z_dim` values, its score is their mean.
    #[serde(default)]
    pub encoder: bool,
}

fn no_norm() -> GeneratorNorm {
    GeneratorNorm::None
}

/// The DCGAN-style convolutional generator and discriminator for images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvGanConfig {
    /// `[C, H, W]` of the images (C = 1 or 3; H and W divisible by `2^levels`).
    pub image_shape: [i64; 3],
    /// Dimension of the latent `z ~ N(0, I)`.
    pub z_dim: i64,
    /// Channels of the discriminator's first conv; layer `i` has `width * 2^i`.
    pub width: i64,
    /// Stride-2 layers of each net.
    pub levels: usize,
    /// Kernel size of the convs (4: DCGAN, 5: the O-GAN reference).
    #[serde(default = "default_kernel")]
    pub kernel: i64,
    /// Normalisation of the generator's hidden layers (default batch norm).
    #[serde(default)]
    pub generator_norm: GeneratorNorm,
    /// Batch norm in the discriminator's layers after the first (default true).
    #[serde(default = "yes")]
    pub discriminator_batch_norm: bool,
    /// Spectral normalisation of every discriminator layer.
    #[serde(default)]
    pub spectral_norm: bool,
    /// O-GAN: the discriminator outputs `z_dim` values, its score is their mean.
    #[serde(default)]
    pub encoder: bool,
}

fn default_kernel() -> i64 {
    4
}

fn yes() -> bool {
    true
}

/// Power iterations per training step of the spectrally normalised layers (Miyato et al.: 1).
const SN_POWER_ITER: usize = 1;

impl MlpGanConfig {
    /// Checks sizes; messages name the key.
    pub fn validate(&self) -> Result<()> {
        if self.z_dim < 1 {
            return Err(Error::config(format!(
                "model.z_dim must be at least 1, got {}",
                self.z_dim
            )));
        }
        if self.hidden.is_empty() || self.hidden.iter().any(|&h| h < 1) {
            return Err(Error::config(format!(
                "model.hidden must list at least one positive width, got {:?}",
                self.hidden
            )));
        }
        if self.encoder && self.z_dim < 2 {
            return Err(Error::config(
                "model.encoder = true needs model.z_dim >= 2 (a correlation over the latent's components)",
            ));
        }
        Ok(())
    }
}

impl ConvGanConfig {
    /// Checks sizes: the image's height and width must be divisible by `2^levels` (each stride-2
    /// layer halves them), the kernel at least 2; messages name the keys.
    pub fn validate(&self) -> Result<()> {
        let [c, h, w] = self.image_shape;
        if !(c == 1 || c == 3) {
            return Err(Error::config(format!(
                "model.image_shape = {:?}: images have 1 (grey) or 3 (RGB) channels",
                self.image_shape
            )));
        }
        if self.levels == 0 || self.levels > 8 {
            return Err(Error::config(format!(
                "model.levels = {}: use 1 to 8 stride-2 layers",
                self.levels
            )));
        }
        let factor = 1i64 << self.levels;
        for (name, size) in [("height", h), ("width", w)] {
            if size < factor || size % factor != 0 {
                return Err(Error::config(format!(
                    "model.image_shape = {:?}: the {name} {size} is not a multiple of 2^levels = \
                     {factor} (model.levels = {} stride-2 layers halve it each); use an image size \
                     that is a multiple of {factor} (data.image_size for a folder) or fewer levels",
                    self.image_shape, self.levels
                )));
            }
        }
        for (key, v) in [("model.z_dim", self.z_dim), ("model.width", self.width)] {
            if v < 1 {
                return Err(Error::config(format!("{key} must be at least 1, got {v}")));
            }
        }
        if !(2..=7).contains(&self.kernel) {
            return Err(Error::config(format!(
                "model.kernel = {}: use a kernel of 2 to 7",
                self.kernel
            )));
        }
        if self.encoder && self.z_dim < 2 {
            return Err(Error::config(
                "model.encoder = true needs model.z_dim >= 2 (a correlation over the latent's components)",
            ));
        }
        Ok(())
    }

    /// `(height, width)` of the smallest feature map, `H / 2^L x W / 2^L`.
    fn base(&self) -> (i64, i64) {
        let f = 1i64 << self.levels;
        (self.image_shape[1] / f, self.image_shape[2] / f)
    }

    /// Channels of the discriminator's layer `i` (and of the generator at the same size).
    fn channels(&self, i: usize) -> i64 {
        self.width << i
    }

    fn transposed(&self, bias: bool) -> nn::ConvTransposeConfig {
        nn::ConvTransposeConfig {
            stride: 2,
            padding: (self.kernel - 1) / 2,
            output_padding: self.kernel % 2,
            bias,
            ws_init: normal_init(),
            bs_init: nn::Init::Const(0.0),
            ..Default::default()
        }
    }

    fn strided(&self) -> Geometry {
        Geometry::Strided {
            kernel: self.kernel,
            stride: 2,
            padding: (self.kernel - 1) / 2,
        }
    }
}

fn normal_init() -> nn::Init {
    nn::Init::Randn {
        mean: 0.0,
        stdev: INIT_STD,
    }
}

fn batch_norm_config(affine: bool) -> nn::BatchNormConfig {
    nn::BatchNormConfig {
        affine,
        ws_init: nn::Init::Const(1.0),
        bs_init: nn::Init::Const(0.0),
        ..Default::default()
    }
}

/// A generator hidden layer's normalisation.
#[derive(Debug)]
enum Norm {
    None,
    Batch(nn::BatchNorm),
    SelfModulated {
        bn: nn::BatchNorm,
        gamma: (nn::Linear, nn::Linear),
        beta: (nn::Linear, nn::Linear),
    },
}

impl Norm {
    /// The normalisation of `channels` features (`spatial`: of a conv feature map) under `p`.
    fn new(p: &Path, kind: GeneratorNorm, channels: i64, z_dim: i64, spatial: bool) -> Self {
        let bn = |affine: bool| {
            if spatial {
                nn::batch_norm2d(p / "bn", channels, batch_norm_config(affine))
            } else {
                nn::batch_norm1d(p / "bn", channels, batch_norm_config(affine))
            }
        };
        match kind {
            GeneratorNorm::None => Norm::None,
            GeneratorNorm::Batch => Norm::Batch(bn(true)),
            GeneratorNorm::SelfModulated => {
                let mlp = |name: &str| {
                    let q = p / name;
                    let c = Default::default();
                    (
                        nn::linear(&q / "0", z_dim, z_dim, c),
                        nn::linear(&q / "1", z_dim, channels, c),
                    )
                };
                Norm::SelfModulated {
                    bn: bn(false),
                    gamma: mlp("gamma"),
                    beta: mlp("beta"),
                }
            }
        }
    }

    fn forward(&self, h: &Tensor, z: &Tensor, train: bool) -> Tensor {
        match self {
            Norm::None => h.shallow_clone(),
            Norm::Batch(bn) => bn.forward_t(h, train),
            Norm::SelfModulated { bn, gamma, beta } => {
                let shape: Vec<i64> = std::iter::once(h.size()[0])
                    .chain(std::iter::once(h.size()[1]))
                    .chain(std::iter::repeat_n(1, h.dim() - 2))
                    .collect();
                let map = |(a, b): &(nn::Linear, nn::Linear)| {
                    b.forward(&a.forward(z).relu()).reshape(shape.as_slice())
                };
                bn.forward_t(h, train) * (map(gamma) + 1.0) + map(beta)
            }
        }
    }
}

/// A generator layer's linear map.
#[derive(Debug)]
enum GenMap {
    Linear(nn::Linear),
    Transposed(nn::ConvTranspose2D),
}

/// The generator `G: z -> x`.
#[derive(Debug)]
pub struct Generator {
    /// `(map, norm)` of each hidden layer, then the output map (its norm is `None`).
    layers: Vec<(GenMap, Norm)>,
    /// `[C, h, w]` the first (linear) layer's output is reshaped to, for conv generators.
    reshape: Option<[i64; 3]>,
    /// Whether the output goes through `tanh` (images in `[-1, 1]`).
    tanh: bool,
    z_dim: i64,
}

impl Generator {
    /// The MLP generator `z_dim -> hidden... -> out_dim` under `p`.
    pub fn mlp(p: &Path, config: &MlpGanConfig, out_dim: i64) -> Result<Self> {
        config.validate()?;
        let mut layers = Vec::new();
        let mut fan_in = config.z_dim;
        for (i, &h) in config.hidden.iter().enumerate() {
            let q = p / i;
            let bias = config.generator_norm == GeneratorNorm::None;
            let linear = nn::linear(
                &q / "linear",
                fan_in,
                h,
                nn::LinearConfig {
                    bias,
                    ..Default::default()
                },
            );
            let norm = Norm::new(&q, config.generator_norm, h, config.z_dim, false);
            layers.push((GenMap::Linear(linear), norm));
            fan_in = h;
        }
        let out = nn::linear(p / "out", fan_in, out_dim, Default::default());
        layers.push((GenMap::Linear(out), Norm::None));
        Ok(Generator {
            layers,
            reshape: None,
            tanh: false,
            z_dim: config.z_dim,
        })
    }

    /// The conv generator of [`ConvGanConfig`] (module docs) under `p`.
    pub fn conv(p: &Path, config: &ConvGanConfig) -> Result<Self> {
        config.validate()?;
        let (bh, bw) = config.base();
        let levels = config.levels;
        let top = config.channels(levels - 1);
        let norm = config.generator_norm;
        let bias = norm == GeneratorNorm::None;
        let linear_config = nn::LinearConfig {
            ws_init: normal_init(),
            bs_init: Some(nn::Init::Const(0.0)),
            bias,
        };
        let q = p / "0";
        let linear = nn::linear(&q / "linear", config.z_dim, top * bh * bw, linear_config);
        let mut layers = vec![(
            GenMap::Linear(linear),
            Norm::new(&q, norm, top, config.z_dim, true),
        )];
        for j in 1..levels {
            let (cin, cout) = (config.channels(levels - j), config.channels(levels - j - 1));
            let q = p / j;
            let conv = nn::conv_transpose2d(
                &q / "conv",
                cin,
                cout,
                config.kernel,
                config.transposed(bias),
            );
            layers.push((
                GenMap::Transposed(conv),
                Norm::new(&q, norm, cout, config.z_dim, true),
            ));
        }
        let out = nn::conv_transpose2d(
            p / "out",
            config.channels(0),
            config.image_shape[0],
            config.kernel,
            config.transposed(true),
        );
        layers.push((GenMap::Transposed(out), Norm::None));
        Ok(Generator {
            layers,
            reshape: Some([top, bh, bw]),
            tanh: true,
            z_dim: config.z_dim,
        })
    }

    /// The latent dimension.
    pub fn z_dim(&self) -> i64 {
        self.z_dim
    }

    /// `G(z)` for `z` `[n, z_dim]` (training mode: batch statistics, running averages updated).
    pub fn forward_t(&self, z: &Tensor, train: bool) -> Tensor {
        let last = self.layers.len() - 1;
        let mut h = z.shallow_clone();
        for (i, (map, norm)) in self.layers.iter().enumerate() {
            h = match map {
                GenMap::Linear(l) => l.forward(&h),
                GenMap::Transposed(c) => c.forward(&h),
            };
            if i == 0 {
                if let Some([c, hh, ww]) = self.reshape {
                    h = h.reshape([-1, c, hh, ww]);
                }
            }
            if i < last {
                h = norm.forward(&h, z, train).relu();
            }
        }
        if self.tanh {
            h.tanh()
        } else {
            h
        }
    }
}

/// A discriminator layer's linear map: plain, or spectrally normalised.
#[derive(Debug)]
enum DiscMap {
    Plain {
        weight: Tensor,
        bias: Tensor,
        geometry: Geometry,
    },
    Spectral(SpectralLinear),
}

impl DiscMap {
    fn new(p: &Path, cin: i64, cout: i64, geometry: Geometry, spectral: bool) -> Result<Self> {
        if spectral {
            let map = SpectralLinear::unit(p, cin, cout, geometry, SN_POWER_ITER)?;
            crate::nn::assign(&map.weight, &(map.weight.randn_like() * INIT_STD));
            crate::nn::assign(&map.bias, &map.bias.zeros_like());
            return Ok(DiscMap::Spectral(map));
        }
        let shape: Vec<i64> = match geometry {
            Geometry::Strided { kernel, .. } => vec![cout, cin, kernel, kernel],
            _ => vec![cout, cin],
        };
        Ok(DiscMap::Plain {
            weight: p.var("weight", &shape, normal_init()),
            bias: p.var("bias", &[cout], nn::Init::Const(0.0)),
            geometry,
        })
    }

    /// The MLP layer `cin -> cout` with PyTorch's default initialisation.
    fn dense_default(p: &Path, cin: i64, cout: i64, spectral: bool) -> Result<Self> {
        if spectral {
            return Ok(DiscMap::Spectral(SpectralLinear::unit(
                p,
                cin,
                cout,
                Geometry::Dense,
                SN_POWER_ITER,
            )?));
        }
        let l = nn::linear(p, cin, cout, Default::default());
        let bias =
            l.bs.ok_or_else(|| Error::config("a linear layer lost its bias"))?;
        Ok(DiscMap::Plain {
            weight: l.ws,
            bias,
            geometry: Geometry::Dense,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        match self {
            DiscMap::Plain {
                weight,
                bias,
                geometry,
            } => geometry.apply(weight, x, Some(bias)),
            DiscMap::Spectral(map) => map.forward(x, train),
        }
    }
}

/// The discriminator `D: x -> R^{n_out}` (for O-GAN the encoder `E`, `n_out = z_dim`).
#[derive(Debug)]
pub struct Discriminator {
    /// `(map, batch norm)` of each hidden layer; each is followed by LeakyReLU(0.2).
    layers: Vec<(DiscMap, Option<nn::BatchNorm>)>,
    head: DiscMap,
    n_out: i64,
}

impl Discriminator {
    /// The MLP discriminator `in_dim -> hidden... -> n_out` under `p`.
    pub fn mlp(p: &Path, config: &MlpGanConfig, in_dim: i64) -> Result<Self> {
        config.validate()?;
        let sn = config.spectral_norm;
        let mut layers = Vec::new();
        let mut fan_in = in_dim;
        for (i, &h) in config.hidden.iter().enumerate() {
            layers.push((DiscMap::dense_default(&(p / i), fan_in, h, sn)?, None));
            fan_in = h;
        }
        let n_out = if config.encoder { config.z_dim } else { 1 };
        let head = DiscMap::dense_default(&(p / "out"), fan_in, n_out, sn)?;
        Ok(Discriminator {
            layers,
            head,
            n_out,
        })
    }

    /// The conv discriminator of [`ConvGanConfig`] (module docs) under `p`.
    pub fn conv(p: &Path, config: &ConvGanConfig) -> Result<Self> {
        config.validate()?;
        let sn = config.spectral_norm;
        let mut layers = Vec::new();
        let mut cin = config.image_shape[0];
        for i in 0..config.levels {
            let q = p / i;
            let cout = config.channels(i);
            let map = DiscMap::new(&(&q / "conv"), cin, cout, config.strided(), sn)?;
            let bn = (i > 0 && config.discriminator_batch_norm)
                .then(|| nn::batch_norm2d(&q / "bn", cout, batch_norm_config(true)));
            layers.push((map, bn));
            cin = cout;
        }
        let (bh, bw) = config.base();
        let n_out = if config.encoder { config.z_dim } else { 1 };
        let head = DiscMap::new(&(p / "out"), cin * bh * bw, n_out, Geometry::Dense, sn)?;
        Ok(Discriminator {
            layers,
            head,
            n_out,
        })
    }

    /// The number of outputs (1, or `z_dim` for an O-GAN encoder).
    pub fn n_out(&self) -> i64 {
        self.n_out
    }

    /// `D(x)` `[n, n_out]` (training mode: batch statistics, power iterations).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut h = x.shallow_clone();
        for (map, bn) in &self.layers {
            h = map.forward(&h, train);
            if let Some(bn) = bn {
                h = bn.forward_t(&h, train);
            }
            h = leaky_relu(&h);
        }
        self.head.forward(&h.flatten(1, -1), train)
    }
}

/// `LeakyReLU(x) = x * (x > 0 ? 1 : 0.2)` with the discriminators' slope (tch's `leaky_relu` has
/// the fixed slope 0.01). Written as a product with a factor that carries no gradient, so the
/// backward pass is one multiplication (`max(x, 0.2 x)` is many times slower on the CPU).
fn leaky_relu(x: &Tensor) -> Tensor {
    let mut factor = x.gt(0.0).to_kind(x.kind());
    let _ = factor
        .g_mul_scalar_(1.0 - LEAKY_SLOPE)
        .g_add_scalar_(LEAKY_SLOPE);
    x * factor
}

/// Both nets, their parameters under [`GENERATOR`] and [`DISCRIMINATOR`] of one store.
#[derive(Debug)]
pub struct Gan {
    pub generator: Generator,
    pub discriminator: Discriminator,
}

impl Gan {
    /// The MLP pair for vectors of `dim` components under `root`.
    pub fn mlp(root: &Path, config: &MlpGanConfig, dim: i64) -> Result<Self> {
        Ok(Gan {
            generator: Generator::mlp(&(root / GENERATOR), config, dim)?,
            discriminator: Discriminator::mlp(&(root / DISCRIMINATOR), config, dim)?,
        })
    }

    /// The conv pair for images under `root`.
    pub fn conv(root: &Path, config: &ConvGanConfig) -> Result<Self> {
        Ok(Gan {
            generator: Generator::conv(&(root / GENERATOR), config)?,
            discriminator: Discriminator::conv(&(root / DISCRIMINATOR), config)?,
        })
    }

    /// Whether the discriminator is an O-GAN encoder (`n_out > 1`).
    pub fn is_encoder(&self) -> bool {
        self.discriminator.n_out() > 1
    }

    /// `n` latents `z ~ N(0, I)` of `kind` on `device`, from libtorch's generator.
    pub fn latents(&self, n: i64, kind: Kind, device: tch::Device) -> Tensor {
        Tensor::randn([n, self.generator.z_dim()], (kind, device))
    }

    /// `n` samples `G(t z)` in evaluation mode, `z ~ N(0, I)` drawn from `seed`
    /// ([`Stream::Sample`]), `t` the temperature.
    pub fn sample(&self, n: i64, seed: u64, temperature: f64, device: tch::Device) -> Tensor {
        tch::manual_seed(derived_seed(seed, Stream::Sample, 0) as i64);
        let z = self.latents(n, Kind::Float, device) * temperature;
        self.generate(&z)
    }

    /// Latents `[n, z_dim]` as f32 on `device`, or an error naming the expected shape.
    pub fn checked_latents(&self, z: &Tensor, device: tch::Device) -> Result<Tensor> {
        let z_dim = self.generator.z_dim();
        let size = z.size();
        if size.len() != 2 || size[1] != z_dim {
            return Err(Error::shape(format!(
                "this GAN decodes latents [n, {z_dim}], got shape {size:?}"
            )));
        }
        Ok(z.to_kind(Kind::Float).to_device(device))
    }

    /// `G(z)` in evaluation mode (batch norm with its running statistics), without a graph, in
    /// chunks of [`EVAL_CHUNK`].
    pub fn generate(&self, z: &Tensor) -> Tensor {
        let _guard = tch::no_grad_guard();
        let parts: Vec<Tensor> = z
            .split(EVAL_CHUNK, 0)
            .iter()
            .map(|c| self.generator.forward_t(c, false))
            .collect();
        Tensor::cat(&parts, 0)
    }

    /// `D(x)` (O-GAN: the codes `E(x)`) in evaluation mode, without a graph, in chunks.
    pub fn discriminate(&self, x: &Tensor) -> Tensor {
        let _guard = tch::no_grad_guard();
        let parts: Vec<Tensor> = x
            .split(EVAL_CHUNK, 0)
            .iter()
            .map(|c| self.discriminator.forward_t(c, false))
            .collect();
        Tensor::cat(&parts, 0)
    }

    /// O-GAN's latent of items `x`, `N(E(x))` ([`super::loss::standardize_rows`]), the latent
    /// whose `G` reconstructs `x`; an error unless the discriminator is an encoder.
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        if !self.is_encoder() {
            return Err(Error::config(
                "this GAN's discriminator is no encoder; train an O-GAN (model.encoder = true) to encode",
            ));
        }
        Ok(super::loss::standardize_rows(&self.discriminate(x)))
    }

    /// O-GAN's `rho(z, E(G(z)))` per latent (evaluation mode); an error unless the
    /// discriminator is an encoder.
    pub fn latent_correlation(&self, z: &Tensor) -> Result<Tensor> {
        if !self.is_encoder() {
            return Err(Error::config(
                "the latent correlation rho(z, E(G(z))) needs an O-GAN (model.encoder = true)",
            ));
        }
        let codes = self.discriminate(&self.generate(z));
        Ok(super::loss::row_correlation(z, &codes))
    }
}

/// Items per forward pass of [`Gan::generate`] and [`Gan::discriminate`].
pub const EVAL_CHUNK: i64 = 500;
