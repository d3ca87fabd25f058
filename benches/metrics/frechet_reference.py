#!/usr/bin/env python3
"""Frechet distance and matrix square roots computed with numpy/scipy the standard way: the
reference that tests/metrics.rs compares genflow's metrics module against.

    frechet_reference.py fd A.npy B.npy        features [n_a, d] and [n_b, d]
    frechet_reference.py sqrtm S.npy OUT.npy   a square matrix; writes scipy's sqrtm(S) to OUT.npy

`fd` prints one JSON object:
  fd                  the Frechet distance as pytorch-fid's calculate_frechet_distance computes it:
                      np.mean, np.cov(rowvar=False) (1/(n-1)), scipy.linalg.sqrtm(S1 @ S2), real part
                      of its trace (with pytorch-fid's 1e-6 diagonal offset only if sqrtm is not finite)
  fd_eigh             the same with tr sqrt(S1 S2) = sum sqrt(max(eig(S1^1/2 S2 S1^1/2), 0)) by numpy's
                      symmetric eigendecomposition (the formulation of SPEC section 6)
  mean_term, trace_a, trace_b, trace_sqrt_product (sqrtm route), trace_sqrt_product_eigh,
  n_a, n_b, dim, max_imag (largest |imaginary part| of sqrtm(S1 @ S2); 0 when it was real)
`sqrtm` prints {"max_imag": ..., "residual": |X X - S|_F / |S|_F} and writes the real part of X.
"""
import json
import sys

import numpy as np
from scipy import linalg


def sqrt_psd(s):
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet(a, b):
    mu1, mu2 = a.mean(axis=0), b.mean(axis=0)
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    diff = mu1 - mu2
    covmean = linalg.sqrtm(s1.dot(s2))
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
    max_imag = float(np.max(np.abs(covmean.imag))) if np.iscomplexobj(covmean) else 0.0
    tr_covmean = float(np.trace(covmean).real)
    r = sqrt_psd(s1)
    m = r @ s2 @ r
    lam = np.linalg.eigvalsh((m + m.T) / 2)
    tr_eigh = float(np.sqrt(np.clip(lam, 0, None)).sum())
    mean_term = float(diff.dot(diff))
    tr1, tr2 = float(np.trace(s1)), float(np.trace(s2))
    return {
        "fd": mean_term + tr1 + tr2 - 2 * tr_covmean,
        "fd_eigh": mean_term + tr1 + tr2 - 2 * tr_eigh,
        "mean_term": mean_term,
        "trace_a": tr1,
        "trace_b": tr2,
        "trace_sqrt_product": tr_covmean,
        "trace_sqrt_product_eigh": tr_eigh,
        "n_a": int(a.shape[0]),
        "n_b": int(b.shape[0]),
        "dim": int(a.shape[1]),
        "max_imag": max_imag,
    }


def main(argv):
    if len(argv) == 4 and argv[1] == "fd":
        a = np.load(argv[2]).astype(np.float64)
        b = np.load(argv[3]).astype(np.float64)
        print(json.dumps(frechet(a, b)))
    elif len(argv) == 4 and argv[1] == "sqrtm":
        s = np.load(argv[2]).astype(np.float64)
        x = linalg.sqrtm(s)
        max_imag = float(np.max(np.abs(x.imag))) if np.iscomplexobj(x) else 0.0
        x = np.ascontiguousarray(x.real)
        residual = float(np.linalg.norm(x @ x - s) / np.linalg.norm(s))
        np.save(argv[3], x)
        print(json.dumps({"max_imag": max_imag, "residual": residual}))
    else:
        sys.exit("usage: frechet_reference.py fd A.npy B.npy | sqrtm S.npy OUT.npy")


if __name__ == "__main__":
    main(sys.argv)
