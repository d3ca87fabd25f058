//! Flows: the [`Transform`] trait, composition, the invertible layers, their registry and the
//! density model.
//!
//! | layer (`layer = ...` in TOML) | map | log-det |
//! |---|---|---|
//! | [`IResBlock`] (`iresblock`) | `x + g(x)`, `Lip(g) < 1` | exact / series / Russian roulette |
//! | [`ActNorm`] (`actnorm`) | `(x + b) e^s` per channel | `H W sum s` |
//! | [`RankOneExp`] (`rank_one_exp`) | `prod_i exp(x_i y_i^T)` over channels | `H W sum_i y_i^T x_i` |
//! | [`MatrixExpConv1x1`] (`matrix_exp`) | `exp(A)` over channels | `H W tr A` |
//! | [`LuConv1x1`] (`lu_conv1x1`) | `P L (U + diag s)` over channels | `H W sum ln|s|` |
//! | [`Squeeze`] (`squeeze`) | space-to-depth 2x2 | 0 |
//! | [`LogitTransform`] (`logit`) | `logit(a + (1 - 2a) x)` | closed form |
//! | [`Dequantize`] (`dequantize`) | `(x + u) / L` | `-D ln L` |
//! | [`InjectivePad`] (`injective_pad`) | zero channels appended (injective) | - |
//! | [`MultiScale`] (`multi_scale`) | levels with squeeze and factor-out | sum of levels |
//!
//! **Adding a layer** takes its own file (the transform, its configuration implementing
//! [`LayerSpec`] with an example, and its tests) and one line in the registry below. The
//! transform contract test then runs it through the same checks as every other layer, models can
//! use it (`mixing = { layer = "lu_conv1x1" }` after every block, for example), and TOML reaches it.
pub mod flow;
pub mod layer;
pub mod transform;

pub use flow::Flow;
pub use layer::{build_stack, Domain, LayerExample, LayerSpec};
pub use transform::{
    FixedPointConfig, FlowContext, FlowEvalConfig, FlowTrainConfig, InverseStats, ItemStats,
    Sequential, Transform,
};

/// Declares the layer modules and the [`LayerConfig`] registry: one line per layer,
/// `Variant(module::Config) = "toml name"`. The module is declared and its layer and
/// configuration are re-exported here.
macro_rules! flow_layers {
    ($($(#[$doc:meta])* $variant:ident($module:ident :: $config:ident) = $name:literal,)+) => {
        $(pub mod $module; pub use $module::{$variant, $config};)+

        /// One configured flow layer, tagged by `layer` in TOML (`{ layer = "actnorm" }`); see the
        /// [module documentation](self) for the table of layers.
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(tag = "layer")]
        pub enum LayerConfig {
            $($(#[$doc])* #[serde(rename = $name)] $variant($config),)+
        }

        impl LayerConfig {
            /// The names of every registered layer, as written in TOML.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            /// The layer's configuration behind its [`LayerSpec`] face.
            pub fn spec(&self) -> &dyn LayerSpec {
                match self {
                    $(LayerConfig::$variant(c) => c,)+
                }
            }

            /// The layer's name, as written in TOML.
            pub fn name(&self) -> &'static str {
                match self {
                    $(LayerConfig::$variant(_) => $name,)+
                }
            }

            /// The examples of every registered layer (for the contract test).
            pub fn examples() -> Vec<LayerExample> {
                let mut all = Vec::new();
                $(all.extend(<$config as LayerSpec>::examples());)+
                all
            }
        }
    };
}

flow_layers! {
    /// An invertible residual block `x + g(x)`.
    IResBlock(iresnet::IResBlockConfig) = "iresblock",
    /// ActNorm with data-dependent initialisation.
    ActNorm(actnorm::ActNormConfig) = "actnorm",
    /// A product of rank-one matrix exponentials over channels.
    RankOneExp(rank_one_exp::RankOneExpConfig) = "rank_one_exp",
    /// A matrix-exponential 1x1 convolution.
    MatrixExpConv1x1(matrix_exp::MatrixExpConfig) = "matrix_exp",
    /// An LU-decomposed 1x1 convolution (Glow).
    LuConv1x1(lu_conv::LuConv1x1Config) = "lu_conv1x1",
    /// Space-to-depth.
    Squeeze(squeeze::SqueezeConfig) = "squeeze",
    /// The logit transform.
    LogitTransform(logit::LogitConfig) = "logit",
    /// Uniform dequantisation of discrete data.
    Dequantize(dequantize::DequantizeConfig) = "dequantize",
    /// Injective zero padding of channels.
    InjectivePad(padding::InjectivePadConfig) = "injective_pad",
    /// Levels with squeezes and factor-out between them.
    MultiScale(multiscale::MultiScaleConfig) = "multi_scale",
}

impl LayerConfig {
    /// The layer `name` with its default settings (errors for layers with required settings and
    /// unknown names, listing the known ones).
    pub fn with_defaults(name: &str) -> crate::Result<Self> {
        let mut table = toml::Table::new();
        table.insert("layer".into(), toml::Value::String(name.to_string()));
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| {
                crate::Error::config(format!(
                    "layer '{name}': {} (layers: {})",
                    e.message().trim(),
                    Self::NAMES.join(", ")
                ))
            })
    }
}
