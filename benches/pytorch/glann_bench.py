#!/usr/bin/env python3
"""The GLANN workloads of `genflow bench` in PyTorch, for a like-for-like comparison on the same libtorch.

Run with the torch wheel genflow builds against (libtorch 2.13.0):

    PYTHONPATH=$HOME/.cache/genflow/torch-2.13.0 python3 benches/pytorch/glann_bench.py --threads 1 --json

* ``glo-step``: one GLO step of genflow's ``glann-mnist`` preset (genflow SPEC section 4), written as
  the official GLANN code (yedidh/glann) writes it: the official MNIST generator ``_netG`` (a
  bias-free Linear 64 -> 1024, LeakyReLU 0.2, Linear 1024 -> 128*7*7, BatchNorm, LeakyReLU,
  ConvTranspose 128 -> 64 (4x4, stride 2, pad 1), BatchNorm, LeakyReLU, ConvTranspose 64 -> 1,
  sigmoid; codes divided by their detached norm first), a code table of ``--codes`` x 64 read by
  ``index_select`` (a dense gradient, as the official ``nn.Embedding``), genflow's loss (the
  Laplacian-pyramid L1 distance of 4 levels: binomial 5x5 blur with replicated edges and stride 2
  down, bilinear up, weights 4^j, divided by C H W), backward, ``torch.optim.Adam`` with betas
  (0.5, 0.999) over two groups (generator 1e-3, codes 1e-2), then the codes projected onto the
  unit sphere. Batch 128 of uniform images.
* ``imle-search``: the exact nearest neighbour of each of ``--codes`` unit codes among
  ``--candidates`` candidates (64 dims), by the same blocked products as genflow
  (``genflow::glann::search``): per block of 512 x 1024 distances ``addmm(|b|^2, -2 a, b^T)``,
  the row minimum, a running minimum over candidate blocks (ties to the lowest index), ``|a|^2``
  added at the end. The data come from ``torch.manual_seed(--seed)`` in the order genflow draws
  them, so ``index_sum`` must equal genflow's.

The JSON printed with ``--json`` has the layout of genflow's (``genflow bench --json``), so that
``benches/compare`` can divide one by the other.
"""

import argparse
import json
import math
import sys
import time
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from bench_report import peak_rss_mb, print_table, summary  # noqa: E402

WORKLOADS = ["glo-step", "imle-search"]
N_Z, SIZE, HIDDEN, CHANNELS, LEVELS, BATCH = 64, 28, 1024, [128, 64], 4, 128
BLOCK_ENTRIES = 1 << 19


class Generator(nn.Module):
    """The official GLANN MNIST generator (yedidh/glann, model._netG with do_bn=True)."""

    def __init__(self):
        super().__init__()
        s0 = SIZE // 4
        self.map = (CHANNELS[0], s0, s0)
        self.lin_in = nn.Linear(N_Z, HIDDEN, bias=False)
        self.lin_im = nn.Linear(HIDDEN, CHANNELS[0] * s0 * s0, bias=False)
        self.bn_im = nn.BatchNorm1d(CHANNELS[0] * s0 * s0)
        self.conv1 = nn.ConvTranspose2d(CHANNELS[0], CHANNELS[1], 4, 2, 1)
        self.bn_conv = nn.BatchNorm2d(CHANNELS[1])
        self.conv2 = nn.ConvTranspose2d(CHANNELS[1], 1, 4, 2, 1)

    def forward(self, z):
        z = z / z.norm(2, 1, keepdim=True).detach()
        h = F.leaky_relu(self.lin_in(z), 0.2)
        h = F.leaky_relu(self.bn_im(self.lin_im(h)), 0.2).view(-1, *self.map)
        h = F.leaky_relu(self.bn_conv(self.conv1(h)), 0.2)
        return torch.sigmoid(self.conv2(h))


def laplacian_distance(x, y, levels=LEVELS):
    """Lap1(x, y) / (C H W) per image (genflow::glann::pyramid)."""
    c = x.shape[1]
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype, device=x.device) / 16
    kernel = torch.outer(k, k).expand(c, 1, 5, 5).contiguous()
    g = x - y
    h, w = g.shape[2:]
    total = 0
    for j in range(levels + 1):
        if j == levels or (g.shape[2] == 1 and g.shape[3] == 1):
            band = g
        else:
            coarse = F.conv2d(F.pad(g, (2, 2, 2, 2), mode="replicate"), kernel, stride=2, groups=c)
            band = g - F.interpolate(coarse, size=g.shape[2:], mode="bilinear", align_corners=False)
        total = total + 4.0 ** j * band.abs().sum((1, 2, 3))
        if band is g:
            break
        g = coarse
    return total / (c * h * w)


def nearest(queries, candidates, rows, cols):
    """Blocked exact nearest neighbours, as genflow::glann::search::nearest."""
    m, n = queries.shape[0], candidates.shape[0]
    b2 = candidates.square().sum(1)
    a2 = queries.square().sum(1)
    minus_2a = queries * -2.0
    indices, distances = [], []
    for q0 in range(0, m, rows):
        a = minus_2a[q0:q0 + rows]
        best = torch.full((a.shape[0],), math.inf, dtype=queries.dtype)
        best_index = torch.zeros(a.shape[0], dtype=torch.long)
        for c0 in range(0, n, cols):
            d = torch.addmm(b2[c0:c0 + cols].unsqueeze(0), a, candidates[c0:c0 + cols].t())
            value, index = d.min(1)
            closer = value < best
            best = torch.where(closer, value, best)
            best_index = torch.where(closer, index + c0, best_index)
        indices.append(best_index)
        distances.append((best + a2[q0:q0 + rows]).clamp_min(0))
    return torch.cat(indices), torch.cat(distances)


def blocks(entries, m, n):
    """genflow::glann::search::Blocks::within."""
    rows = max(1, min(int(math.floor(math.sqrt(entries // 2))), max(m, 1)))
    return rows, max(1, min(entries // rows, max(n, 1)))


def timed(fn, warmup, samples):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(samples):
        cpu, start = time.process_time(), time.perf_counter()
        fn()
        out.append(((time.perf_counter() - start) * 1e3, (time.process_time() - cpu) * 1e3))
    return out


def glo_step(args):
    g = Generator()
    codes = nn.Parameter(torch.randn(args.codes, N_Z))
    with torch.no_grad():
        codes /= codes.norm(2, 1, keepdim=True)
    images = torch.rand(args.batch, 1, SIZE, SIZE)
    index = torch.randint(args.codes, (args.batch,))
    opt = torch.optim.Adam([{"params": g.parameters(), "lr": 1e-3},
                            {"params": [codes], "lr": 1e-2}], betas=(0.5, 0.999))

    def step():
        opt.zero_grad(set_to_none=False)
        x = g(codes.index_select(0, index))
        loss = laplacian_distance(x, images).mean()
        loss.backward()
        opt.step()
        with torch.no_grad():
            codes.div_(codes.norm(2, 1, keepdim=True))

    return {"codes": args.codes, "batch": args.batch}, step


def imle_search(args):
    d = N_Z
    codes = torch.randn(args.codes, d)
    codes = codes / codes.norm(2, 1, keepdim=True)
    candidates = torch.randn(args.candidates, d) * 0.125
    rows, cols = blocks(BLOCK_ENTRIES, args.codes, args.candidates)
    extra = {"codes": args.codes, "candidates": args.candidates, "block": [rows, cols]}

    def search():
        index, _ = nearest(codes, candidates, rows, cols)
        extra["index_sum"] = int(index.sum())

    return extra, search


def run(name, args):
    torch.manual_seed(args.seed)
    rss = peak_rss_mb()
    extra, fn = {"glo-step": glo_step, "imle-search": imle_search}[name](args)
    samples = timed(fn, args.warmup, args.samples)
    result = summary(name, samples, rss, **extra)
    if name == "imle-search":
        result["gflops"] = 2.0 * args.codes * args.candidates * N_Z / (result["median"] * 1e-3) / 1e9
    return result


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--workload", action="append", choices=WORKLOADS)
    p.add_argument("--method", default="tangent", help="ignored (benches/compare passes it)")
    p.add_argument("--device", default="cpu", choices=["cpu"])
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: default)")
    p.add_argument("--codes", type=int, default=60000)
    p.add_argument("--candidates", type=int, default=600000)
    p.add_argument("--batch", type=int, default=BATCH)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    results = [run(name, args) for name in args.workload or WORKLOADS]
    report = {"implementation": "pytorch", "method": "tangent", "device": args.device,
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "config": {k: getattr(args, k) for k in ("codes", "candidates", "batch", "warmup", "samples")},
              "workloads": results}
    if args.json:
        print(json.dumps(report))
        return
    print_table(f"pytorch, {report['threads']} threads, device {args.device}", results)


if __name__ == "__main__":
    main(sys.argv[1:])
