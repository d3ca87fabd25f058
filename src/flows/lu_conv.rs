//! The LU-decomposed invertible 1x1 convolution of Glow (Kingma & Dhariwal 2018, section 3.2,
//! eq. 10): a `C x C` matrix over channels parameterised as
//!
//! ```text
//! W = P L (U + diag(sign(s) exp(log|s|)))
//! ```
//!
//! with a fixed permutation `P`, a unit lower-triangular `L`, a strictly upper-triangular `U` and
//! a learned `log|s|` (the signs are fixed). Then `ln|det W| = sum_i log|s_i|`, so the log-det per
//! sample is `(H W) sum_i log|s_i|` at `O(C)` cost, and the inverse takes two triangular solves.
//! As in Glow, `W` starts as a random rotation, decomposed once.
//!
//! On `[batch, C]` it is a dense layer; on `[batch, C, H, W]` a 1x1 convolution.
//! Parameters: `l`, `u`, `log_s` (trained) and the buffers `p`, `sign_s`.
//!
//! ```
//! use genflow::flows::{FlowContext, LuConv1x1, LuConv1x1Config, Transform};
//! use genflow::linalg::logdet::LogDetEstimator;
//! use tch::{nn::VarStore, Device, Kind, Tensor};
//! let vs = VarStore::new(Device::Cpu);
//! let layer = LuConv1x1::new(&(vs.root() / "lu"), 3, LuConv1x1Config::default())?;
//! let mut ctx = FlowContext::eval(LogDetEstimator::Exact, 0);
//! let x = Tensor::randn([2, 3, 4, 4], (Kind::Float, Device::Cpu));
//! let (y, logdet) = layer.forward(&x, &mut ctx)?;
//! assert!(f64::try_from((layer.inverse(&y, &mut ctx)? - &x).abs().max())? < 1e-5);
//! assert_eq!(logdet.size(), [2]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::flows::layer::{channels, Built, LayerExample, LayerSpec};
use crate::flows::matrix_exp::{check_channels, over_channels, per_sample_logdet};
use crate::flows::transform::{FlowContext, Transform};
use crate::flows::LayerConfig;
use crate::nn::assign;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

/// Settings of [`LuConv1x1`] (`{ layer = "lu_conv1x1" }`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LuConv1x1Config {}

impl LayerSpec for LuConv1x1Config {
    fn collection(&self) -> Option<&'static str> {
        Some("mixing")
    }

    fn build(&self, p: &Path, input: &[i64]) -> Result<Built> {
        let c = channels(input, "lu_conv1x1")?;
        Ok((Box::new(LuConv1x1::new(p, c, *self)?), input.to_vec()))
    }

    fn examples() -> Vec<LayerExample> {
        let config = LayerConfig::LuConv1x1(LuConv1x1Config {});
        vec![
            LayerExample::new("lu_conv1x1_dense", config.clone(), &[5]),
            LayerExample::new("lu_conv1x1_conv", config, &[3, 4, 4]),
        ]
    }
}

/// `y = W x` over channels with `W = P L (U + diag(s))`; see the [module documentation](self).
#[derive(Debug)]
pub struct LuConv1x1 {
    /// The permutation matrix, a buffer.
    p: Tensor,
    /// Entries below the diagonal of `L` (the rest is masked).
    l: Tensor,
    /// Entries above the diagonal of `U` (the rest is masked).
    u: Tensor,
    /// `log|s_i|`.
    log_s: Tensor,
    /// `sign(s_i)`, a buffer.
    sign_s: Tensor,
    channels: i64,
}

impl LuConv1x1 {
    /// A layer over `channels` channels, starting at the LU decomposition of a random rotation
    /// (drawn from libtorch's generator), with its tensors under `path`.
    pub fn new(path: &Path, channels: i64, _config: LuConv1x1Config) -> Result<Self> {
        if channels < 1 {
            return Err(Error::config(format!(
                "the LU 1x1 convolution needs channels >= 1, got {channels}"
            )));
        }
        let opts = (Kind::Double, path.device());
        let (q, _) = Tensor::f_linalg_qr(&Tensor::f_randn([channels, channels], opts)?, "reduced")?;
        let (perm, lower, upper) = Tensor::f_linalg_lu(&q, true)?;
        let diag = upper.f_diagonal(0, 0, 1)?;
        let p = path.f_zeros_no_train("p", &[channels, channels])?;
        let sign_s = path.f_zeros_no_train("sign_s", &[channels])?;
        let l = path.f_var("l", &[channels, channels], Init::Const(0.0))?;
        let u = path.f_var("u", &[channels, channels], Init::Const(0.0))?;
        let log_s = path.f_var("log_s", &[channels], Init::Const(0.0))?;
        assign(&p, &perm);
        assign(&sign_s, &diag.f_sign()?);
        assign(&l, &lower.f_tril(-1)?);
        assign(&u, &upper.f_triu(1)?);
        assign(&log_s, &diag.f_abs()?.f_log()?);
        Ok(LuConv1x1 {
            p,
            l,
            u,
            log_s,
            sign_s,
            channels,
        })
    }

    /// The factors `(P, L, U + diag(s))` in the parameters' dtype.
    fn factors(&self) -> Result<(Tensor, Tensor, Tensor)> {
        let kind = self.l.kind();
        let eye = Tensor::f_eye(self.channels, (kind, self.l.device()))?;
        let lower = self.l.f_tril(-1)?.f_add(&eye)?;
        let s = self.sign_s.to_kind(kind).f_mul(&self.log_s.f_exp()?)?;
        let upper = self.u.f_triu(1)?.f_add(&s.f_diag(0)?)?;
        Ok((self.p.to_kind(kind), lower, upper))
    }

    /// The dense `W = P L (U + diag(s))`, `[C, C]`.
    pub fn weight(&self) -> Result<Tensor> {
        let (p, lower, upper) = self.factors()?;
        Ok(p.f_matmul(&lower)?.f_matmul(&upper)?)
    }

    /// `W^{-1} = (U + diag s)^{-1} L^{-1} P^T` by two triangular solves.
    fn inverse_weight(&self) -> Result<Tensor> {
        let (p, lower, upper) = self.factors()?;
        let pt = p.f_tr()?;
        let l_inv_pt = lower.f_linalg_solve_triangular(&pt, false, true, true)?;
        Ok(upper.f_linalg_solve_triangular(&l_inv_pt, true, true, false)?)
    }

    fn apply(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        check_channels(x, self.channels, &self.l, "LU 1x1 convolution")?;
        over_channels(x, |v| Ok(v.f_matmul(&w.f_tr()?)?))
    }
}

impl Transform for LuConv1x1 {
    fn forward(&self, x: &Tensor, _ctx: &mut FlowContext) -> Result<(Tensor, Tensor)> {
        let y = self.apply(x, &self.weight()?)?;
        let ld = self.log_s.f_sum(self.log_s.kind())?;
        Ok((y, per_sample_logdet(&ld, x)?))
    }

    fn inverse(&self, y: &Tensor, _ctx: &mut FlowContext) -> Result<Tensor> {
        self.apply(y, &self.inverse_weight()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::VarStore;

    fn layer(channels: i64) -> (VarStore, LuConv1x1) {
        tch::manual_seed(3);
        let mut vs = VarStore::new(tch::Device::Cpu);
        let layer = LuConv1x1::new(&vs.root(), channels, LuConv1x1Config {}).unwrap();
        vs.set_kind(Kind::Double);
        (vs, layer)
    }

    /// `W` starts as a rotation: `W W^T = I` and `|det W| = 1`, so the log-det starts at 0 (to f32
    /// rounding: the factors are stored in the store's f32 when the layer is built).
    #[test]
    fn starts_as_a_rotation() {
        let (_vs, layer) = layer(6);
        let w = layer.weight().unwrap();
        let err = (w.matmul(&w.tr()) - Tensor::eye(6, (Kind::Double, tch::Device::Cpu)))
            .abs()
            .max()
            .double_value(&[]);
        assert!(err < 1e-6, "W W^T - I = {err:e}");
        assert!(layer.log_s.sum(Kind::Double).double_value(&[]).abs() < 1e-6);
    }

    /// After moving every parameter, the log-det still equals `ln|det W|` of the dense matrix
    /// (LU in f64 by libtorch, an independent route), and the inverse weight inverts `W`.
    #[test]
    fn logdet_and_inverse_match_the_dense_matrix() {
        let (_vs, layer) = layer(5);
        let shift = |t: &Tensor, scale: f64| {
            let noise = Tensor::randn(t.size(), (Kind::Double, tch::Device::Cpu)) * scale;
            assign(t, &(t + noise));
        };
        shift(&layer.l, 0.3);
        shift(&layer.u, 0.3);
        shift(&layer.log_s, 0.5);
        let w = layer.weight().unwrap();
        let (_, want) = Tensor::linalg_slogdet(&w);
        let got = layer.log_s.sum(Kind::Double).double_value(&[]);
        assert!((got - want.double_value(&[])).abs() < 1e-10, "{got} vs {want}");
        let x = Tensor::randn([4, 5, 2, 3], (Kind::Double, tch::Device::Cpu));
        let mut ctx = FlowContext::eval(crate::linalg::logdet::LogDetEstimator::Exact, 0);
        let (y, ld) = layer.forward(&x, &mut ctx).unwrap();
        assert!((ld.double_value(&[0]) - 6.0 * got).abs() < 1e-10);
        let back = layer.inverse(&y, &mut ctx).unwrap();
        assert!((back - x).abs().max().double_value(&[]) < 1e-10);
    }

    /// Parameters configured in TOML reach the layer through the registry.
    #[test]
    fn is_reachable_from_toml() {
        let layer: LayerConfig = toml::from_str("layer = \"lu_conv1x1\"").unwrap();
        assert_eq!(layer, LayerConfig::LuConv1x1(LuConv1x1Config {}));
        assert_eq!(layer.spec().collection(), Some("mixing"));
    }
}
