//! `identity_report`, the library side of `genflow linalg check`: every identity passes its bound
//! for sizes 1 to 64, the report is deterministic in the seed, and bad sizes are errors.

use genflow::linalg::check::identity_report;
use genflow::Error;

#[test]
fn every_identity_passes_for_sizes_1_to_64() {
    for n in [1usize, 2, 3, 7, 16, 64] {
        for seed in [0u64, 41] {
            let report = identity_report(n, seed).unwrap();
            assert_eq!(report["n"], n);
            let rows = report["identities"].as_array().unwrap();
            assert_eq!(rows.len(), 10);
            for row in rows {
                let error = row["error"].as_f64().unwrap();
                let bound = row["bound"].as_f64().unwrap();
                assert!(
                    error.is_finite() && error <= bound,
                    "n = {n}, seed {seed}: {row}"
                );
                assert_eq!(row["passed"], true);
            }
            assert_eq!(report["all_passed"], true);
        }
    }
}

#[test]
fn report_is_deterministic_and_seed_dependent() {
    let a = identity_report(5, 3).unwrap();
    assert_eq!(a, identity_report(5, 3).unwrap());
    assert_ne!(
        a["identities"],
        identity_report(5, 4).unwrap()["identities"]
    );
}

#[test]
fn size_zero_is_an_error() {
    assert!(matches!(identity_report(0, 0), Err(Error::Config(_))));
}
