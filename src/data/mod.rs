//! Data sets: the 2-D toy densities of FFJORD and Residual Flows ([`toy`]).
pub mod toy;
