//! Linear algebra: log-determinant estimators for residual blocks (and, see the submodules, the
//! matrix tools of SPEC section 2).
pub mod batch;
pub mod check;
pub mod dense;
pub mod expm;
pub mod logdet;
pub mod logm;
pub mod rank_one;
