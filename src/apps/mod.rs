//! End-to-end jobs behind the CLI (train, evaluate, sample), written against the library API so that
//! they can be called from Rust too.
pub mod toy_density;
