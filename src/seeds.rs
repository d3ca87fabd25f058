//! Seeds derived from a run's seed, one stream per purpose.
//!
//! Every random draw of a run (data order, Hutchinson probes and roulette draws, test points,
//! samples) comes from a seed derived from the run's seed, the purpose ([`Stream`]) and the step,
//! so that a resumed run draws exactly what the uninterrupted one would have.

/// What a derived seed is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// The order of the training data in each epoch, or the toy batch of each step.
    Data = 1,
    /// The log-det estimator's probes and term counts of each step.
    Probe = 2,
    /// Test points and evaluation noise.
    Test = 3,
    /// Samples for pictures and `genflow sample`.
    Sample = 4,
    /// Random inputs a model draws while it trains (IMLE's candidate noise of each round).
    Noise = 5,
}

/// A seed for `stream` at `step`, derived from the run's `seed` (a fixed mix of the three; distinct
/// streams and steps give unrelated seeds).
pub fn derived_seed(seed: u64, stream: Stream, step: u64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (stream as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9)
        ^ step
}
