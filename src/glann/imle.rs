//! IMLE in GLO's code space: the search that starts each round, and the regression loss.
//!
//! Implicit maximum likelihood estimation (Li & Malik 2018, algorithm 1) fits a sampler `T(e)`,
//! `e ~ N(0, I)`, to data points `z_i` (here: GLO's codes) by alternating
//!
//! 1. draw `K` noise vectors `e_k` and find for every `z_i` the nearest sample,
//!    `k(i) = argmin_k |z_i - T(e_k) / |T(e_k)||^2` ([`search_round`]);
//! 2. for some epochs over the codes, minimise `mean_i |T(e_{k(i)}) - z_i|^2` ([`regression_loss`]),
//!    the mean squared error over the entries as the official GLANN code (`nn.MSELoss`).
//!
//! Every code thus pulls the sample closest to it, so no code is left without samples nearby
//! (IMLE's remedy for mode dropping). The official code draws `K = 2 N` (rounded to batches) and
//! searches with faiss' exact `IndexFlatL2`; genflow draws `K = candidates_per_code * N`
//! (default 10, SPEC section 4) and searches with [`super::search::nearest`]. The candidates are
//! mapped with `T` in evaluation mode (running batch-norm statistics), in chunks, without
//! gradients, and projected onto the unit sphere before the search: the generator sees only
//! `T(e) / |T(e)|` ([`super::Generator::forward`]), and the codes live on the sphere. Searching
//! with the raw `T(e)` (as the official code does) lets the candidates' norms decide: at the start,
//! when `|T(e)|` is far from 1, every code picked the same few smallest candidates (4 distinct
//! ones for 6000 MNIST codes), the regression then saw batches of repeated noise, and the
//! batch-norm statistics it left behind blew the next rounds up.
//!
//! ```
//! use genflow::glann::{imle, Mapper, MapperConfig};
//! use genflow::tch::{nn::VarStore, Device, Kind, Tensor};
//! let vs = VarStore::new(Device::Cpu);
//! let t = Mapper::new(&(vs.root() / "mapper"), 4, &MapperConfig::default())?;
//! let codes = Tensor::randn([50, 4], (Kind::Float, Device::Cpu));
//! let round = imle::search_round(&t, &codes, 500, 1 << 12)?;
//! assert_eq!(round.noise.size(), [50, 32]);        // each code's nearest noise
//! let loss = imle::regression_loss(&t, &round.noise, &codes)?;
//! assert!(f64::try_from(&loss)? >= 0.0);
//! # Ok::<(), genflow::Error>(())
//! ```

use super::codes::project_to_sphere;
use super::search::{nearest, Blocks};
use super::Mapper;
use crate::{Error, Result};
use tch::{Kind, Tensor};

/// Noise vectors mapped by `T` at a time during the search.
const MAP_CHUNK: i64 = 65536;

/// What one search found.
#[derive(Debug)]
pub struct Round {
    /// For each code, the noise `e_{k(i)}` whose image is nearest to it, `[N, noise_dim]`.
    pub noise: Tensor,
    /// The mean over the codes of `|z_i - T(e_{k(i)}) / |T(e_{k(i)})||^2` (in `[0, 4]`).
    pub mean_sq_distance: f64,
    /// How many distinct noise vectors were chosen (out of the candidates).
    pub distinct: i64,
}

/// One IMLE search: `candidates` noise vectors from libtorch's generator, mapped by `T`, and for
/// each code `[N, n_z]` the nearest of them, with blocks of at most `block_entries` distances.
pub fn search_round(
    mapper: &Mapper,
    codes: &Tensor,
    candidates: i64,
    block_entries: i64,
) -> Result<Round> {
    if candidates < 1 {
        return Err(Error::config(format!(
            "an IMLE round needs at least one candidate, got {candidates}"
        )));
    }
    let codes = codes.f_detach()?;
    let noise = Tensor::f_randn(
        [candidates, mapper.noise_dim()],
        (Kind::Float, codes.device()),
    )?;
    let mapped = tch::no_grad(|| -> Result<Tensor> {
        let chunks = (0..candidates)
            .step_by(MAP_CHUNK as usize)
            .map(|s| mapper.forward(&noise.f_narrow(0, s, MAP_CHUNK.min(candidates - s))?, false))
            .collect::<Result<Vec<_>>>()?;
        let mut mapped = Tensor::f_cat(&chunks, 0)?.f_to_kind(codes.kind())?;
        project_to_sphere(&mut mapped)?;
        Ok(mapped)
    })?;
    let n = codes.size()[0];
    let blocks = Blocks::within(block_entries, n, candidates)?;
    let found = nearest(&codes, &mapped, blocks)?;
    let distinct = found.index.f_unique_dim(0, false, false, false)?.0.size()[0];
    Ok(Round {
        noise: noise.f_index_select(0, &found.index)?,
        mean_sq_distance: f64::try_from(found.sq_distance.f_mean(Kind::Double)?)?,
        distinct,
    })
}

/// The regression loss of a batch: the mean over entries of `(T(e_b) - z_b)^2` for noise `e`
/// `[B, noise_dim]` and codes `z` `[B, n_z]`, the mapper in training mode.
pub fn regression_loss(mapper: &Mapper, noise: &Tensor, codes: &Tensor) -> Result<Tensor> {
    let z = mapper.forward(noise, true)?;
    if z.size() != codes.size() {
        return Err(Error::shape(format!(
            "IMLE regresses {:?} mapped noise onto codes of the same shape, got codes {:?}",
            z.size(),
            codes.size()
        )));
    }
    Ok(z.f_sub(&codes.f_detach()?)?
        .f_square()?
        .f_mean(Kind::Float)?)
}
