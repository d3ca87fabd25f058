//! The layer registry's contract: what a configured flow layer must say about itself, and the one
//! stack builder every model uses.
//!
//! A layer's configuration implements [`LayerSpec`]: where its parameters live in a stack, how it
//! is built for a given input shape (and what shape comes out), and small examples on which the
//! transform contract test (`tests/transform_contract.rs`) runs it. The registry
//! ([`LayerConfig`], in [`crate::flows`]) lists every layer once; [`build_stack`] turns a list of
//! configured layers into a [`Sequential`] transform, naming the parameters of the `k`-th layer of
//! collection `c` `<path>.<c>.<k>` (`blocks.3.g.1.weight`, `actnorms.3.bias`, `mixing.3.a`, ...).
//!
//! ```
//! use genflow::flows::{build_stack, FlowContext, LayerConfig, Transform};
//! use genflow::linalg::logdet::LogDetEstimator;
//! use tch::{nn::VarStore, Device, Kind, Tensor};
//!
//! let layers: Vec<LayerConfig> = toml::from_str::<toml::Table>(
//!     r#"layers = [
//!         { layer = "actnorm" },
//!         { layer = "iresblock", hidden = [16, 16], activation = "lipswish" },
//!         { layer = "rank_one_exp", factors = 2 },
//!     ]"#,
//! )?["layers"].clone().try_into()?;
//! let vs = VarStore::new(Device::Cpu);
//! let (flow, out_shape) = build_stack(&vs.root(), &[2], &layers)?;
//! assert_eq!(out_shape, [2]);
//! assert!(vs.variables().contains_key("blocks.0.g.0.weight"));
//! let x = Tensor::randn([4, 2], (Kind::Float, Device::Cpu));
//! let mut ctx = FlowContext::eval(LogDetEstimator::Exact, 0);
//! let (z, logdet) = flow.forward(&x, &mut ctx)?;
//! assert_eq!(logdet.size(), [4]);
//! assert!((flow.inverse(&z, &mut ctx)? - x).abs().max().double_value(&[]) < 1e-4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::{LayerConfig, Sequential, Transform};
use crate::{Error, Result};
use std::collections::BTreeMap;
use tch::nn::Path;

/// A built layer and the per-sample shape of its output.
pub type Built = (Box<dyn Transform>, Vec<i64>);

/// What inputs a layer accepts, so that tests can draw valid ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Domain {
    /// Any real values.
    Real,
    /// Values inside `(0, 1)` (the logit transform).
    UnitInterval,
    /// Integer levels `0..levels` (dequantisation).
    Levels(u32),
}

/// A small configuration of a layer, an input shape it accepts and what the contract expects of
/// it, for the transform contract test.
#[derive(Debug, Clone)]
pub struct LayerExample {
    /// A short name for messages, e.g. `iresblock_conv`.
    pub name: &'static str,
    pub config: LayerConfig,
    /// The per-sample input shape (`[D]` or `[C, H, W]`).
    pub input: Vec<i64>,
    pub domain: Domain,
    /// `false` for injective maps that are not onto (their Jacobian is not square): the contract
    /// then checks a zero log-det and a full-rank Jacobian instead of the log-determinant.
    pub bijective: bool,
}

impl LayerExample {
    /// An example of a bijective layer on real inputs.
    pub fn new(name: &'static str, config: LayerConfig, input: &[i64]) -> Self {
        LayerExample {
            name,
            config,
            input: input.to_vec(),
            domain: Domain::Real,
            bijective: true,
        }
    }
}

/// A configured flow layer (one variant of [`LayerConfig`]).
pub trait LayerSpec {
    /// The collection the layer's parameters are counted in within a stack (`blocks`, `actnorms`,
    /// `mixing`), or `None` for a layer without parameters of its own, which is handed the
    /// stack's own path.
    fn collection(&self) -> Option<&'static str>;
    /// Builds the layer for inputs of per-sample shape `input` with its parameters under `p`.
    /// Errors name the setting that does not fit the shape.
    fn build(&self, p: &Path, input: &[i64]) -> Result<Built>;
    /// Small examples for the contract test: every layer has at least one.
    fn examples() -> Vec<LayerExample>
    where
        Self: Sized;
}

/// Builds `layers` in order for inputs of per-sample shape `input`: the composed transform and the
/// per-sample shape of its output. The parameters of the `k`-th layer of collection `c` live under
/// `p / c / k`; parameter-free layers get `p` itself.
pub fn build_stack(
    p: &Path,
    input: &[i64],
    layers: &[LayerConfig],
) -> Result<(Sequential, Vec<i64>)> {
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut stack = Sequential::new();
    let mut shape = input.to_vec();
    for (i, layer) in layers.iter().enumerate() {
        let spec = layer.spec();
        let path = match spec.collection() {
            Some(c) => {
                let k = counts.entry(c).or_insert(0);
                let path = p / c / *k;
                *k += 1;
                path
            }
            None => p.clone(),
        };
        let (transform, out) = spec.build(&path, &shape).map_err(|e| match e {
            Error::Config(msg) => Error::config(format!(
                "layer {i} ({}) on inputs {shape:?}: {msg}",
                layer.name()
            )),
            other => other,
        })?;
        stack.push_boxed(transform);
        shape = out;
    }
    Ok((stack, shape))
}

/// `[C, H, W]` of an image input, or an error saying that `layer` needs images.
pub fn image_shape(input: &[i64], layer: &str) -> Result<[i64; 3]> {
    <[i64; 3]>::try_from(input).map_err(|_| {
        Error::config(format!(
            "{layer} needs image inputs [C, H, W], got per-sample shape {input:?}"
        ))
    })
}

/// The channels of a vector (`[D]`) or image (`[C, H, W]`) input.
pub fn channels(input: &[i64], layer: &str) -> Result<i64> {
    match input {
        [d] | [d, _, _] if *d >= 1 => Ok(*d),
        _ => Err(Error::config(format!(
            "{layer} needs inputs [D] or [C, H, W], got per-sample shape {input:?}"
        ))),
    }
}

/// Serde for an optional layer written either as its name (`"rank_one_exp"`, with default
/// settings; `"none"` for no layer) or as a table (`{ layer = "rank_one_exp", factors = 2 }`).
pub mod optional {
    use super::LayerConfig;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NameOrTable {
        Name(String),
        Table(LayerConfig),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<LayerConfig>, D::Error> {
        match Option::<NameOrTable>::deserialize(d)? {
            None => Ok(None),
            Some(NameOrTable::Table(layer)) => Ok(Some(layer)),
            Some(NameOrTable::Name(name)) if name == "none" => Ok(None),
            Some(NameOrTable::Name(name)) => LayerConfig::with_defaults(&name)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }

    pub fn serialize<S: Serializer>(layer: &Option<LayerConfig>, s: S) -> Result<S::Ok, S::Error> {
        layer.serialize(s)
    }
}
