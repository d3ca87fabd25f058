//! The choice of an always-invertible linear layer inserted after every i-ResNet block of a model
//! (SPEC section 2): nothing, a product of rank-one exponentials, or a matrix exponential.

use super::{MatrixExpConfig, MatrixExpConv1x1, RankOneExp, RankOneExpConfig, Transform};
use crate::Result;
use serde::{Deserialize, Serialize};
use tch::nn::Path;

/// A linear layer over channels after every block, chosen in a model's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MixingLayer {
    /// No mixing layer.
    #[default]
    None,
    /// A product of rank-one exponentials `exp(x_i y_i^T)` ([`RankOneExp`]).
    RankOneExp,
    /// `exp(A)` ([`MatrixExpConv1x1`]).
    MatrixExp,
}

impl MixingLayer {
    /// The layer over `channels` channels with parameters under `p` (`None` for no layer).
    pub fn build(&self, p: &Path, channels: i64) -> Result<Option<Box<dyn Transform>>> {
        Ok(match self {
            MixingLayer::None => None,
            MixingLayer::RankOneExp => Some(Box::new(RankOneExp::new(
                p,
                channels,
                RankOneExpConfig::default(),
            )?)),
            MixingLayer::MatrixExp => Some(Box::new(MatrixExpConv1x1::new(
                p,
                channels,
                MatrixExpConfig::default(),
            )?)),
        })
    }
}
