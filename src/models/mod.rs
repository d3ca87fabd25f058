//! Model builders: turn a validated configuration into a flow whose parameters live in a `VarStore`.
pub mod vector_flow;

pub use vector_flow::VectorFlow;
