//! 1-Lipschitz activations with their derivatives, for tangent passes.
//!
//! A tangent pass through `y = phi(a)` is `dy = phi'(a) * da`; each activation returns `phi'(a)` as an
//! ordinary differentiable tensor so that the log-determinant estimate stays differentiable with
//! first-order autodiff only (SPEC section 1).

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{nn::Path, Tensor};

/// Which activation a Lipschitz network uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ActivationKind {
    /// `x` for `x > 0`, `e^x - 1` otherwise; `phi' = min(1, e^x) = min(1, phi + 1)`.
    Elu,
    /// `ln(1 + e^x)`; `phi' = sigmoid(x)`.
    Softplus,
    /// LipSwish (Chen et al. 2019, Residual Flows, eq. 13): `x sigmoid(beta x) / 1.1` with
    /// `beta = softplus(b)` learned; 1-Lipschitz for every beta.
    #[default]
    Lipswish,
    /// `max(0, x)`; not smooth, so for classifiers only (SPEC section 1).
    Relu,
}

/// An activation with its parameters (LipSwish's `b`).
#[derive(Debug)]
pub struct Activation {
    kind: ActivationKind,
    /// LipSwish's raw parameter `b`, `beta = softplus(b)`.
    beta_raw: Option<Tensor>,
}

/// Residual Flows initialises LipSwish's `b` at 0.5 (so `beta = softplus(0.5) = 0.974`).
const LIPSWISH_INIT_B: f64 = 0.5;
/// The LipSwish normaliser: `max_x d/dx [x sigmoid(beta x)] <= 1.1` for every beta.
const LIPSWISH_SCALE: f64 = 1.1;

impl Activation {
    /// Builds the activation; LipSwish registers its parameter `b` under `path`.
    pub fn new(path: &Path, kind: ActivationKind) -> Self {
        let beta_raw = (kind == ActivationKind::Lipswish)
            .then(|| path.var("beta", &[1], tch::nn::Init::Const(LIPSWISH_INIT_B)));
        Activation { kind, beta_raw }
    }

    /// The activation kind.
    pub fn kind(&self) -> ActivationKind {
        self.kind
    }

    fn beta(&self) -> Result<Tensor> {
        self.beta_raw
            .as_ref()
            .map(|b| b.softplus())
            .ok_or_else(|| Error::config("LipSwish activation built without its beta parameter"))
    }

    /// `phi(a)`.
    pub fn forward(&self, a: &Tensor) -> Result<Tensor> {
        Ok(match self.kind {
            ActivationKind::Elu => a.elu(),
            ActivationKind::Softplus => a.softplus(),
            ActivationKind::Relu => a.relu(),
            ActivationKind::Lipswish => a * (a * self.beta()?).sigmoid() / LIPSWISH_SCALE,
        })
    }

    /// `(phi(a), phi'(a))`, both differentiable in `a` and in the activation's parameters.
    pub fn forward_with_derivative(&self, a: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok(match self.kind {
            ActivationKind::Elu => {
                // phi'(a) = e^a = phi(a) + 1 for a < 0, and 1 otherwise: from the output, no exp
                let y = a.elu();
                let d = (&y + 1.0).clamp_max(1.0);
                (y, d)
            }
            ActivationKind::Softplus => (a.softplus(), a.sigmoid()),
            ActivationKind::Relu => (a.relu(), a.gt(0.0).to_kind(a.kind())),
            ActivationKind::Lipswish => {
                let beta = self.beta()?;
                let ba = a * &beta;
                let s = ba.sigmoid();
                let y = a * &s / LIPSWISH_SCALE;
                // d/da [a s(beta a)] = s + beta a s (1 - s)
                let dy = (&s + &ba * &s * (1.0 - &s)) / LIPSWISH_SCALE;
                (y, dy)
            }
        })
    }
}
