//! Exact nearest-neighbour search by blocks of matrix products (IMLE's search step).
//!
//! For queries `a_i` and candidates `b_k` the squared distance is
//! `|a_i - b_k|^2 = |a_i|^2 - 2 a_i . b_k + |b_k|^2`. The search walks the `m x n` distance matrix
//! in blocks of `queries x candidates` entries: each block is one `addmm`,
//! `D = |b|^2 + (-2 a) b^T` (the factor `-2` is applied to the queries once, exactly, since it is a
//! power of two), then a row minimum; a running minimum over the candidate blocks keeps the
//! nearest candidate so far and its index. `|a_i|^2` is the same for every candidate of a row, so
//! it is added once at the end. Only one block of distances exists at a time, so the working
//! memory is `queries x candidates` entries plus the `n` candidate norms, whatever `m` and `n`.
//!
//! Ties go to the lowest candidate index: within a block the row minimum returns its first
//! minimal entry, and a later block replaces the running minimum only when strictly closer. The
//! result is the brute-force answer `argmin_k |a_i - b_k|^2` as long as the rounding of the two
//! formulas does not reorder two candidates (exactly, for integer-valued data of moderate size).
//!
//! For IMLE on MNIST (60000 codes of 64 dims, 600000 candidates) the default blocks are
//! 512 x 1024 `f32` entries: 2 MiB of distances and 2.3 MiB of candidate norms, beside the inputs
//! themselves (15 MiB of codes and 147 MiB of candidates; IMLE adds the 73 MiB of noise they come
//! from, [`super::imle`]).
//!
//! ```
//! use genflow::glann::search::{nearest, Blocks};
//! use genflow::tch::Tensor;
//! let codes = Tensor::from_slice(&[0.0f32, 0.0, 5.0, 5.0]).reshape([2, 2]);
//! let candidates = Tensor::from_slice(&[4.0f32, 4.0, 1.0, 0.0, 0.0, 1.0]).reshape([3, 2]);
//! let found = nearest(&codes, &candidates, Blocks { queries: 1, candidates: 2 })?;
//! assert_eq!(Vec::<i64>::try_from(&found.index)?, [1, 0]);     // a tie at 0 goes to index 1
//! assert_eq!(Vec::<f32>::try_from(&found.sq_distance)?, [1.0, 2.0]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::{Error, Result};
use tch::{Kind, Tensor};

/// Entries of one block of the default blocks: 2 MiB of `f32`, 512 x 1024, which stays in a CPU
/// core's cache (on one core this runs the search about twice as fast as 64 MiB blocks; GPUs
/// want larger ones, e.g. `1 << 26`).
pub const DEFAULT_BLOCK_ENTRIES: i64 = 1 << 19;

/// The shape of the blocks of the distance matrix the search computes at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocks {
    /// Query rows per block.
    pub queries: i64,
    /// Candidate columns per block.
    pub candidates: i64,
}

impl Blocks {
    /// Blocks of at most `entries` distances, about twice as wide as tall: `sqrt(entries / 2)`
    /// query rows (fewer when there are fewer queries) by as many candidates as fit (at most `n`).
    pub fn within(entries: i64, m: i64, n: i64) -> Result<Blocks> {
        if entries < 1 {
            return Err(Error::config(format!(
                "a block of the nearest-neighbour search needs at least 1 entry, got {entries}"
            )));
        }
        let rows = ((entries / 2) as f64).sqrt().floor() as i64;
        let queries = rows.clamp(1, m.max(1));
        let candidates = (entries / queries).clamp(1, n.max(1));
        Ok(Blocks {
            queries,
            candidates,
        })
    }

    /// Bytes the search holds besides its inputs for `n` candidates of `element` bytes each: one
    /// block of distances, its row minima and indices, the candidate norms, the scaled queries
    /// of one block and the running minima.
    pub fn working_bytes(&self, n: i64, element: i64) -> i64 {
        let index = 8;
        self.queries * self.candidates * element
            + n * element
            + self.queries * (2 * element + 2 * index)
    }
}

/// The result of [`nearest`].
#[derive(Debug)]
pub struct Nearest {
    /// For each query, the index of its nearest candidate (`i64 [m]`).
    pub index: Tensor,
    /// For each query, the squared distance to it (`[m]`, the inputs' kind).
    pub sq_distance: Tensor,
}

/// The nearest of `candidates` (`[n, d]`) to each of `queries` (`[m, d]`), exactly, computed in
/// `blocks` (see the module docs). Both must be float tensors of one kind on one device, finite,
/// with `n >= 1`.
pub fn nearest(queries: &Tensor, candidates: &Tensor, blocks: Blocks) -> Result<Nearest> {
    check(queries, candidates, blocks)?;
    let (m, n) = (queries.size()[0], candidates.size()[0]);
    let kind = queries.kind();
    let options = (kind, queries.device());
    let b2 = candidates
        .f_square()?
        .f_sum_dim_intlist([1i64].as_slice(), false, kind)?;
    let a2 = queries
        .f_square()?
        .f_sum_dim_intlist([1i64].as_slice(), false, kind)?;
    let minus_2a = queries.f_mul_scalar(-2.0)?;
    let mut indices = Vec::new();
    let mut distances = Vec::new();
    let mut block: Option<Tensor> = None;
    for q0 in (0..m).step_by(blocks.queries as usize) {
        let rows = blocks.queries.min(m - q0);
        let a = minus_2a.f_narrow(0, q0, rows)?;
        let mut best = Tensor::f_full([rows], f64::INFINITY, options)?;
        let mut best_index = Tensor::f_zeros([rows], (Kind::Int64, queries.device()))?;
        for c0 in (0..n).step_by(blocks.candidates as usize) {
            let cols = blocks.candidates.min(n - c0);
            let out = match block.take() {
                Some(t) if t.size() == [rows, cols] => t,
                _ => Tensor::f_empty([rows, cols], options)?,
            };
            let b = candidates.f_narrow(0, c0, cols)?;
            let norms = b2.f_narrow(0, c0, cols)?.f_unsqueeze(0)?;
            let _ = norms.f_addmm_out(&out, &a, &b.f_tr()?)?;
            let (value, index) = out.f_min_dim(1, false)?;
            let closer = value.f_lt_tensor(&best)?;
            best = value.f_where_self(&closer, &best)?;
            best_index = index.f_add_scalar(c0)?.f_where_self(&closer, &best_index)?;
            block = Some(out);
        }
        let sq = best.f_add(&a2.f_narrow(0, q0, rows)?)?.f_clamp_min(0.0)?;
        indices.push(best_index);
        distances.push(sq);
    }
    Ok(Nearest {
        index: Tensor::f_cat(&indices, 0)?,
        sq_distance: Tensor::f_cat(&distances, 0)?,
    })
}

fn check(queries: &Tensor, candidates: &Tensor, blocks: Blocks) -> Result<()> {
    let (qs, cs) = (queries.size(), candidates.size());
    let shapes_ok = qs.len() == 2 && cs.len() == 2 && qs[1] == cs[1] && cs[0] >= 1;
    if !shapes_ok || !queries.is_floating_point() || queries.kind() != candidates.kind() {
        return Err(Error::shape(format!(
            "nearest-neighbour search takes float queries [m, d] and at least one candidate \
             [n, d] of the same kind and d, got {:?} {qs:?} and {:?} {cs:?}",
            queries.kind(),
            candidates.kind()
        )));
    }
    if queries.device() != candidates.device() {
        return Err(Error::shape(format!(
            "nearest-neighbour search: queries on {:?} but candidates on {:?}; move both to one \
             device",
            queries.device(),
            candidates.device()
        )));
    }
    if blocks.queries < 1 || blocks.candidates < 1 {
        return Err(Error::config(format!(
            "nearest-neighbour search blocks must be at least 1 x 1, got {blocks:?}"
        )));
    }
    for (what, t) in [("queries", queries), ("candidates", candidates)] {
        if !bool::try_from(t.f_isfinite()?.f_all()?)? {
            return Err(Error::NonFinite(format!(
                "the nearest-neighbour {what} hold NaN or infinity"
            )));
        }
    }
    Ok(())
}
