#!/usr/bin/env python3
"""FD and KID of distorted test images against the clean test split, on genflow's feature network.

Writes five levels each of Gaussian noise and of Gaussian blur applied to a data set's test images
(IDX files, intensities clamped to [0, 1] and stored as bytes like the data set itself), runs
`genflow metrics` on each against `DATASET:test`, and prints a markdown table. The first row is FD
and KID between two disjoint halves of the training set (the same distribution: the scale of
"small"), measured through a scratch data folder whose test split is the second half.

    python3 benches/metrics/distortion_levels.py --genflow target/release/genflow --dataset mnist

Needs numpy and scipy; the data set installed (`genflow data install mnist`) and its feature
network cached (the first `genflow metrics` trains it).
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
from scipy.ndimage import gaussian_filter

NOISE_STD = [0.05, 0.1, 0.2, 0.3, 0.5]
BLUR_SIGMA = [0.5, 0.75, 1.0, 1.5, 2.0]
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path):
    with open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def write_idx(path, array):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with open(path, "wb") as f:
        f.write(header + array.tobytes())


def to_bytes(intensities):
    return np.clip(np.rint(intensities * 255.0), 0, 255).astype(np.uint8)


def metrics(args, images, against, data_dir=None, features=None):
    cmd = [args.genflow, "--threads", str(args.threads), "--device", "cpu", "metrics", "--images",
           images, "--against", against, "--json"]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    if features:
        cmd += ["--features", features]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if out.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed: {out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--genflow", default="target/release/genflow")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=os.environ.get(
        "GENFLOW_DATA", os.path.expanduser("~/.cache/genflow/data")))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    source = os.path.join(args.data_dir, args.dataset)
    net = os.path.join(source, "feature-net")
    test = read_idx(os.path.join(source, FILES["test"][0])).astype(np.float64) / 255.0
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # two disjoint halves of the training set: the second half poses as the test split
        train = read_idx(os.path.join(source, FILES["train"][0]))
        labels = read_idx(os.path.join(source, FILES["train"][1]))
        half = len(train) // 2
        halves = os.path.join(tmp, "halves", args.dataset)
        os.makedirs(halves)
        write_idx(os.path.join(halves, FILES["test"][0]), train[half:])
        write_idx(os.path.join(halves, FILES["test"][1]), labels[half:])
        for name in FILES["train"]:
            shutil.copy(os.path.join(source, name), halves)
        first = os.path.join(tmp, "first-half-ubyte")
        write_idx(first, train[:half])
        r = metrics(args, first, f"{args.dataset}:test", os.path.join(tmp, "halves"), net)
        rows.append(("train halves", f"{half} vs {len(train) - half}", r))
        for kind, levels in (("noise std", NOISE_STD), ("blur sigma", BLUR_SIGMA)):
            for level in levels:
                if kind == "noise std":
                    images = test + rng.normal(0.0, level, test.shape)
                else:
                    images = np.stack([gaussian_filter(im, level, mode="constant") for im in test])
                path = os.path.join(tmp, "distorted-ubyte")
                write_idx(path, to_bytes(images))
                rows.append((kind, str(level), metrics(args, path, f"{args.dataset}:test")))
    print(f"FD and KID against {args.dataset}:test on the feature network "
          f"{rows[0][2]['feature_net_sha256'][:12]}")
    print()
    print("| images | level | FD | KID | precision | recall |")
    print("|---|---|---|---|---|---|")
    for kind, level, r in rows:
        print(f"| {kind} | {level} | {r['fd']:.3f} | {r['kid_mean']:.3f} +- {r['kid_std']:.3f} "
              f"| {r['precision']:.3f} | {r['recall']:.3f} |")


if __name__ == "__main__":
    main()
