//! Linear algebra: log-determinant estimators for residual blocks (and, see the submodules, the
//! matrix tools of SPEC section 2).
pub mod logdet;
