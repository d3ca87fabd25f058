//! Spectrally normalised linear maps (dense, 1x1 conv, kxk conv) with persistent power iteration.
//!
//! Every weight is used as `W_hat = W / max(1, sigma(W) / c)` with `0 < c < 1` ("soft" spectral
//! normalisation, Behrmann et al. 2019, eq. 4; Miyato et al. 2018), so `|W_hat|_2 <= c`; a GAN
//! discriminator's layers ([`SpectralLinear::unit`]) use `W_hat = W / sigma(W)` (Miyato et al. 2018,
//! eq. 8, as `torch.nn.utils.spectral_norm`), so `|W_hat|_2 = 1`.
//! `sigma(W)` is estimated by power iteration with persistent vectors `u`, `v` stored as buffers
//! (they are saved in checkpoints, so inversion after loading uses the spectral norm training used):
//!
//! * dense and 1x1 conv layers, and strided convs ([`Geometry::Strided`], normalised as the matrix
//!   `[out, in k k]` as Miyato et al. do): the matrix version `v <- W^T u / |.|`, `u <- W v / |.|`;
//! * kxk conv layers (stride 1, same padding): the conv *operator* at the input's spatial size,
//!   `v <- conv_transpose(u) / |.|`, `u <- conv(v) / |.|` (Gouk et al. 2018; Behrmann et al. 2019),
//!
//! and `sigma = <u, W v>`, differentiable in `W`. In training mode each call runs `n_power_iter`
//! iterations; in evaluation mode the stored vectors are used as they are ([`SpectralLinear::refine`]
//! runs the iteration to a tolerance when a certified bound is wanted).

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{nn::Path, Kind, Tensor};

/// Settings of the spectral normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpectralConfig {
    /// The Lipschitz coefficient `c` of each linear map, `0 < c < 1`.
    pub coeff: f64,
    /// Power iterations per training call.
    pub n_power_iter: usize,
}

impl Default for SpectralConfig {
    /// The official i-ResNet defaults: `c = 0.9`, 5 power iterations.
    fn default() -> Self {
        SpectralConfig {
            coeff: 0.9,
            n_power_iter: 5,
        }
    }
}

impl SpectralConfig {
    /// Checks `0 < c < 1`.
    pub fn validate(&self) -> Result<()> {
        if !(self.coeff > 0.0 && self.coeff < 1.0) {
            return Err(Error::config(format!(
                "spectral coefficient c must satisfy 0 < c < 1 for the block to be invertible, got {}",
                self.coeff
            )));
        }
        Ok(())
    }
}

/// The shape of a linear map: what it acts on and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Geometry {
    /// `[batch, in] -> [batch, out]`.
    Dense,
    /// `[batch, in, H, W] -> [batch, out, H, W]`, odd kernel, stride 1, same padding; `in_hw` is the
    /// spatial size the operator norm is computed at (only used for kernels above 1).
    Conv { kernel: i64, in_hw: (i64, i64) },
    /// `[batch, in, H, W] -> [batch, out, H', W']`: a conv with any kernel, stride and padding,
    /// whose weight is normalised as the matrix `[out, in k k]` (Miyato et al. 2018, section 2.1).
    Strided {
        kernel: i64,
        stride: i64,
        padding: i64,
    },
}

impl Geometry {
    /// Whether the power iteration runs on the weight matrix (dense and 1x1 conv).
    fn matrix_power_iteration(&self) -> bool {
        matches!(
            self,
            Geometry::Dense | Geometry::Conv { kernel: 1, .. } | Geometry::Strided { .. }
        )
    }

    /// `(stride, padding)` of a conv geometry.
    fn stride_padding(&self) -> (i64, i64) {
        match self {
            Geometry::Dense => (1, 0),
            Geometry::Conv { kernel, .. } => (1, kernel / 2),
            Geometry::Strided {
                stride, padding, ..
            } => (*stride, *padding),
        }
    }

    /// The kernel size of a conv geometry (1 for dense maps).
    fn kernel(&self) -> i64 {
        match self {
            Geometry::Dense => 1,
            Geometry::Conv { kernel, .. } | Geometry::Strided { kernel, .. } => *kernel,
        }
    }

    /// The linear part of the map applied to `t` with weight `w`.
    pub fn apply(&self, w: &Tensor, t: &Tensor, bias: Option<&Tensor>) -> Tensor {
        match self {
            Geometry::Dense => t.linear(w, bias),
            Geometry::Conv { .. } | Geometry::Strided { .. } => {
                let (s, p) = self.stride_padding();
                t.conv2d(w, bias, [s, s], [p, p], [1, 1], 1)
            }
        }
    }

    /// The adjoint of [`Geometry::apply`] (without bias), for the operator power iteration of
    /// stride-1 convs (strided ones iterate on the matrix). For a stride-1 same-padding conv it is
    /// the conv with the in/out-swapped, spatially flipped kernel (the transposed convolution),
    /// written as a plain conv because libtorch's CPU `conv_transpose2d` misses the oneDNN fast
    /// path (3-5x slower for the power iteration's single-image inputs).
    fn adjoint(&self, w: &Tensor, u: &Tensor) -> Tensor {
        match self {
            Geometry::Dense => u.matmul(w),
            Geometry::Conv { .. } | Geometry::Strided { .. } => {
                let (s, p) = self.stride_padding();
                if s == 1 {
                    self.apply(&w.transpose(0, 1).flip([2, 3]), u, None)
                } else {
                    u.conv_transpose2d(w, None::<Tensor>, [s, s], [p, p], [0, 0], 1, [1, 1])
                }
            }
        }
    }
}

/// How a layer's weight is scaled by its spectral norm estimate `sigma`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scaling {
    /// `W / max(1, sigma / c)`: Lipschitz constant at most `c` (i-ResNet blocks).
    AtMost(f64),
    /// `W / sigma`: spectral norm 1 (the SN-GAN discriminator).
    Unit,
}

/// A linear (affine) map whose weight is spectrally normalised.
#[derive(Debug)]
pub struct SpectralLinear {
    pub weight: Tensor,
    pub bias: Tensor,
    /// Left singular vector estimate (buffer).
    u: Tensor,
    /// Right singular vector estimate (buffer).
    v: Tensor,
    /// The effective sigma of the last training call (buffer), for checkpoints and diagnostics.
    sigma: Tensor,
    geometry: Geometry,
    scaling: Scaling,
    n_power_iter: usize,
}

fn normalize(t: &Tensor) -> Tensor {
    t / (t.norm() + 1e-12)
}

/// Vectors in the block of the subspace iteration that certifies kxk conv norms.
const SUBSPACE_BLOCK: i64 = 16;

/// The top singular value of an operator with its unit singular vectors (`W v = sigma u`).
struct SingularPair {
    u: Tensor,
    v: Tensor,
    sigma: f64,
    iterations: usize,
}

/// An orthonormal basis of the row space of `m` (`[k, d]`, `k <= d`), as rows.
fn orthonormal_rows(m: &Tensor) -> Tensor {
    Tensor::linalg_qr(&m.tr(), "reduced").0.tr()
}

/// The scaling and power iterations of the soft normalisation `config` describes.
fn soft(config: SpectralConfig) -> (Scaling, usize) {
    (Scaling::AtMost(config.coeff), config.n_power_iter)
}

impl SpectralLinear {
    /// A dense map `in_dim -> out_dim` with PyTorch's default initialisation.
    pub fn dense(p: &Path, in_dim: i64, out_dim: i64, config: SpectralConfig) -> Result<Self> {
        config.validate()?;
        Self::new(p, in_dim, out_dim, Geometry::Dense, soft(config))
    }

    /// A map normalised to spectral norm 1, `W_hat = W / sigma(W)` with `n_power_iter` power
    /// iterations per training call (Miyato et al. 2018, eq. 8; 1 iteration in their code): a
    /// dense map `in_channels -> out_channels` or a conv of [`Geometry::Strided`].
    ///
    /// ```
    /// use genflow::nn::{Geometry, SpectralLinear};
    /// let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    /// let geometry = Geometry::Strided { kernel: 4, stride: 2, padding: 1 };
    /// let conv = SpectralLinear::unit(&vs.root(), 3, 8, geometry, 1)?;
    /// let y = conv.forward(&tch::Tensor::zeros([2, 3, 16, 16], tch::kind::FLOAT_CPU), true);
    /// assert_eq!(y.size(), [2, 8, 8, 8]);
    /// # Ok::<(), genflow::Error>(())
    /// ```
    pub fn unit(
        p: &Path,
        in_channels: i64,
        out_channels: i64,
        geometry: Geometry,
        n_power_iter: usize,
    ) -> Result<Self> {
        if let Geometry::Conv { .. } = geometry {
            return Err(Error::config(
                "a unit-norm spectral layer is dense or Geometry::Strided (normalised as a matrix)",
            ));
        }
        if geometry.kernel() < 1 {
            return Err(Error::config(format!(
                "conv kernel must be >= 1, got {}",
                geometry.kernel()
            )));
        }
        let scaling = (Scaling::Unit, n_power_iter);
        Self::new(p, in_channels, out_channels, geometry, scaling)
    }

    /// A conv map with an odd `kernel`, stride 1 and same padding, at input size `in_hw`.
    pub fn conv(
        p: &Path,
        in_channels: i64,
        out_channels: i64,
        kernel: i64,
        in_hw: (i64, i64),
        config: SpectralConfig,
    ) -> Result<Self> {
        if kernel % 2 == 0 || kernel < 1 {
            return Err(Error::config(format!(
                "conv kernel must be odd and >= 1, got {kernel}"
            )));
        }
        config.validate()?;
        Self::new(
            p,
            in_channels,
            out_channels,
            Geometry::Conv { kernel, in_hw },
            soft(config),
        )
    }

    fn new(
        p: &Path,
        fan_in_channels: i64,
        out: i64,
        geometry: Geometry,
        (scaling, n_power_iter): (Scaling, usize),
    ) -> Result<Self> {
        let (wshape, fan_in): (Vec<i64>, i64) = match geometry {
            Geometry::Dense => (vec![out, fan_in_channels], fan_in_channels),
            Geometry::Conv { .. } | Geometry::Strided { .. } => {
                let k = geometry.kernel();
                (vec![out, fan_in_channels, k, k], fan_in_channels * k * k)
            }
        };
        let bound = 1.0 / (fan_in as f64).sqrt();
        let weight = p.var(
            "weight",
            &wshape,
            tch::nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        );
        let bias = p.var(
            "bias",
            &[out],
            tch::nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        );
        let (ushape, vshape): (Vec<i64>, Vec<i64>) = match geometry {
            Geometry::Conv {
                kernel,
                in_hw: (h, w),
            } if kernel > 1 => (vec![1, out, h, w], vec![1, fan_in_channels, h, w]),
            _ => (vec![out], vec![fan_in]),
        };
        let u = p.zeros_no_train("u", &ushape);
        let v = p.zeros_no_train("v", &vshape);
        let sigma = p.zeros_no_train("sigma", &[1]);
        super::assign(&u, &normalize(&u.randn_like()));
        super::assign(&v, &normalize(&v.randn_like()));
        Ok(SpectralLinear {
            weight,
            bias,
            u,
            v,
            sigma,
            geometry,
            scaling,
            n_power_iter,
        })
    }

    /// The map's geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// `W v` for the power iteration (matrix or operator form).
    fn forward_op(&self, w: &Tensor, v: &Tensor) -> Tensor {
        if self.geometry.matrix_power_iteration() {
            w.reshape([w.size()[0], -1]).mv(v)
        } else {
            self.geometry.apply(w, v, None)
        }
    }

    /// `W^T u` for the power iteration.
    fn adjoint_op(&self, w: &Tensor, u: &Tensor) -> Tensor {
        if self.geometry.matrix_power_iteration() {
            w.reshape([w.size()[0], -1]).tr().mv(u)
        } else {
            self.geometry.adjoint(w, u)
        }
    }

    /// Runs `n >= 1` power iterations on the stored vectors and returns `sigma = <u, W v>` of the
    /// final vectors, differentiable in `W`. The last iteration's product `W v` is taken with the
    /// graph and reused for sigma (`u = W v / |W v|`), which saves one product per call; the
    /// vectors are stored once at the end.
    fn power_iterate_with_sigma(&self, n: usize) -> Tensor {
        let v = tch::no_grad(|| {
            let w = self.weight.detach();
            let mut u = self.u.shallow_clone();
            let mut v = self.v.shallow_clone();
            for i in 0..n {
                v = normalize(&self.adjoint_op(&w, &u));
                if i + 1 < n {
                    u = normalize(&self.forward_op(&w, &v));
                }
            }
            v
        });
        let wv = self.forward_op(&self.weight, &v);
        let u = tch::no_grad(|| normalize(&wv.detach()));
        super::assign(&self.v, &v);
        super::assign(&self.u, &u);
        (u * wv).sum(self.weight.kind())
    }

    /// Runs `n` power iterations on the stored vectors (no graph).
    fn power_iterate(&self, n: usize) {
        tch::no_grad(|| {
            let w = self.weight.detach();
            for _ in 0..n {
                let v = normalize(&self.adjoint_op(&w, &self.u));
                let u = normalize(&self.forward_op(&w, &v));
                super::assign(&self.v, &v);
                super::assign(&self.u, &u);
            }
        });
    }

    /// `sigma = <u, W v>` with the stored vectors, differentiable in `W`.
    fn sigma_estimate(&self) -> Tensor {
        (&self.u * self.forward_op(&self.weight, &self.v)).sum(self.weight.kind())
    }

    /// `W_hat = W / max(1, sigma / c)` (or `W / sigma` for [`SpectralLinear::unit`] maps). In
    /// training mode, runs the configured power iterations first and records the effective sigma.
    pub fn normalized_weight(&self, train: bool) -> Tensor {
        let sigma = if train && self.n_power_iter > 0 {
            self.power_iterate_with_sigma(self.n_power_iter)
        } else {
            self.sigma_estimate()
        };
        if train {
            super::assign(&self.sigma, &sigma.detach().reshape([1]));
        }
        let factor = match self.scaling {
            Scaling::AtMost(c) => (sigma / c).clamp_min(1.0),
            Scaling::Unit => sigma,
        };
        &self.weight / factor
    }

    /// Power iteration until the relative change of sigma is below `tol` (or `max_iter`); returns
    /// the iterations run. Use before evaluation for a certified Lipschitz bound.
    pub fn refine(&self, tol: f64, max_iter: usize) -> usize {
        let mut previous = f64::INFINITY;
        for i in 1..=max_iter {
            self.power_iterate(1);
            let sigma = tch::no_grad(|| self.sigma_estimate().double_value(&[]));
            if (sigma - previous).abs() <= tol * sigma.abs() {
                return i;
            }
            previous = sigma;
        }
        max_iter
    }

    /// Makes the stored vectors exact before evaluation: the top singular vectors from an SVD for
    /// dense and 1x1 maps (so `sigma = <u, W v>` is the true spectral norm and `|W_hat|_2 <= c`
    /// holds exactly), and from a subspace iteration with Rayleigh-Ritz on the operator for kxk
    /// convs (whose largest singular values come in near-degenerate clusters, where plain power iteration
    /// stops short of the top one and leaves `|W_hat|_2 > c`). Returns the iterations used.
    pub fn certify(&self, tol: f64, max_iter: usize) -> usize {
        if !self.geometry.matrix_power_iteration() {
            let top = self.top_singular_pair(&self.weight, tol, max_iter);
            super::assign(&self.u, &top.u.to_kind(self.u.kind()));
            super::assign(&self.v, &top.v.to_kind(self.v.kind()));
            return top.iterations;
        }
        tch::no_grad(|| {
            let w = self.weight.detach();
            let m = w.reshape([w.size()[0], -1]).to_kind(Kind::Double);
            let (u, _, v) = m.svd(true, true);
            super::assign(&self.u, &u.select(1, 0).to_kind(self.u.kind()));
            super::assign(&self.v, &v.select(1, 0).to_kind(self.v.kind()));
        });
        1
    }

    /// The largest singular value of the conv operator of `w` and its singular vectors, in f64, by
    /// subspace iteration with Rayleigh-Ritz (Golub & Van Loan, *Matrix Computations*, 4th ed.,
    /// section 8.3.7) on [`SUBSPACE_BLOCK`] vectors, the first of them the stored `v`: the block
    /// `Q` becomes an orthonormal basis of `W^T W Q` each iteration, and the top eigenpair of
    /// `Q^T W^T W Q` gives `sigma^2` and `v`. The error shrinks like `(sigma_{k+1} / sigma_1)^2` per
    /// iteration instead of power iteration's `(sigma_2 / sigma_1)^2`. Stops when `sigma` changes by
    /// at most `tol` relative, or after `max_iter` iterations.
    fn top_singular_pair(&self, w: &Tensor, tol: f64, max_iter: usize) -> SingularPair {
        tch::no_grad(|| {
            let w = w.detach().to_kind(Kind::Double);
            let shape = self.v.size();
            let d: i64 = shape.iter().product();
            let k = SUBSPACE_BLOCK.min(d);
            let rest = Tensor::randn([k - 1, d], (Kind::Double, w.device()));
            let first = self.v.to_kind(Kind::Double).reshape([1, d]);
            let mut q = orthonormal_rows(&Tensor::cat(&[first, rest], 0));
            let block: Vec<i64> = [k].into_iter().chain(shape[1..].iter().copied()).collect();
            let (mut previous, mut iterations) = (f64::INFINITY, 0);
            loop {
                iterations += 1;
                let wq = self.geometry.apply(&w, &q.reshape(block.as_slice()), None);
                let wtwq = self.geometry.adjoint(&w, &wq).reshape([k, d]);
                let gram = q.matmul(&wtwq.tr());
                let (values, vectors) = ((&gram + gram.tr()) * 0.5).linalg_eigh("L");
                let sigma = values.double_value(&[k - 1]).max(0.0).sqrt();
                if (sigma - previous).abs() <= tol * sigma || iterations >= max_iter {
                    let v =
                        normalize(&vectors.select(1, k - 1).matmul(&q)).reshape(shape.as_slice());
                    let u = normalize(&self.forward_op(&w, &v));
                    return SingularPair {
                        u,
                        v,
                        sigma,
                        iterations,
                    };
                }
                previous = sigma;
                q = orthonormal_rows(&wtwq);
            }
        })
    }

    /// The effective sigma recorded by the last training call.
    pub fn recorded_sigma(&self) -> f64 {
        self.sigma.double_value(&[0])
    }

    /// The largest singular value of the *normalised* map (evaluation weights) computed exactly:
    /// SVD of the matrix for dense and 1x1 maps, a subspace iteration with Rayleigh-Ritz to
    /// convergence (1e-12) on the operator for kxk convs. This is the layer's Lipschitz constant.
    pub fn exact_operator_norm(&self) -> Result<f64> {
        let w_hat = tch::no_grad(|| self.normalized_weight(false)).to_kind(Kind::Double);
        if self.geometry.matrix_power_iteration() {
            let m = w_hat.reshape([w_hat.size()[0], -1]);
            let (_, s, _) = m.svd(true, false);
            return Ok(s.max().double_value(&[]));
        }
        Ok(self.top_singular_pair(&w_hat, 1e-12, 5000).sigma)
    }

    /// `W_hat x + b`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        self.geometry
            .apply(&self.normalized_weight(train), x, Some(&self.bias))
    }
}
