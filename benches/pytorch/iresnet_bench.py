#!/usr/bin/env python3
"""The workloads of `genflow bench` in PyTorch, for a like-for-like comparison on the same libtorch.

Run with the torch wheel genflow builds against (libtorch 2.13.0):

    PYTHONPATH=$HOME/.cache/genflow/torch-2.13.0 python3 benches/pytorch/iresnet_bench.py \
        --method official --threads 2 --json

Two log-det methods for the i-ResNet block (Behrmann et al., ICML 2019; genflow SPEC section 1):

* ``official``: the estimator of the official i-ResNet code (jhjacobsen/invertible-resnet,
  ``matrix_utils.power_series_matrix_logarithm_trace``): ``k`` vector-Jacobian products
  ``w <- w^T J_g`` by ``torch.autograd.grad(g(x), x, grad_outputs=w, create_graph=True)``, i.e.
  second-order autodiff when the loss is differentiated;
* ``tangent``: ``k`` explicit tangent passes ``w <- J_g w`` through the recorded tangent maps of g
  (the spectrally normalised weight for each conv, ``phi'(a) * t`` for each activation), written with
  ordinary differentiable ops, so one first-order backward pass gives the parameter gradients.

Both use the same Hutchinson probe ``v ~ N(0, I)`` per sample and the series
``ln det(I + J) = sum_k (-1)^(k+1) v^T J^k v / k``. The spectral normalisation follows the official
hook: ``n`` power iterations on the conv operator (``conv_transpose``/``conv``) or the matrix (1x1, dense)
in training mode, then ``sigma = <u, W v>`` and ``W / max(1, sigma / c)``.

The JSON printed with ``--json`` has the layout of genflow's (``genflow bench --json``) so that
``benches/compare`` can divide one by the other. Peak memory is the process's peak RSS
(``ru_maxrss``); run one workload per process for a per-workload peak.
"""

import argparse
import json
import math
import statistics
import sys
import time
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from bench_report import peak_rss_mb, print_table, summary  # noqa: E402

WORKLOADS = [
    "block-step",
    "block-forward",
    "block-inverse",
    "logdet-terms",
    "toy-step",
    "mnist-step",
    "matmul-1024",
]
LN_2PI = math.log(2 * math.pi)
# genflow's iresnet-toy preset: 10 x [ActNorm, MLP 2-64-64-64-2 block], LipSwish, c = 0.9,
# 1 power iteration per step, batch 500, exact log-det, Adam 1e-3.
TOY_BLOCKS, TOY_WIDTH, TOY_BATCH, TOY_POWER_ITER = 10, 64, 500, 1
# genflow's iresnet-mnist preset: logit (alpha 1e-6), scales [2, 4, 4] of [ActNorm, conv block
# 3-1-3 with hidden 32] on 1x28x28, 4x14x14, 16x7x7, LipSwish, c = 0.95, 1 power iteration,
# batch 64; the bench uses 3 series terms (the mean cost of the preset's Russian roulette).
MNIST_SCALES, MNIST_HIDDEN, MNIST_COEFF, MNIST_BATCH, MNIST_TERMS = [2, 4, 4], 32, 0.95, 64, 3
MNIST_ALPHA = 1e-6


# ----------------------------------------------------------------------------------------------
# Model: spectrally normalised linear maps, 1-Lipschitz activations, the residual function g.
# ----------------------------------------------------------------------------------------------


class SpectralLinear(nn.Module):
    """``W_hat x + b`` with ``W_hat = W / max(1, sigma / coeff)`` and persistent power iteration.

    ``kernel=None`` is a dense layer; an odd ``kernel`` is a stride-1 same-padding conv whose
    operator norm is taken at spatial size ``hw`` (the matrix version for 1x1 kernels).
    """

    def __init__(self, cin, cout, kernel, hw, coeff, n_power_iter):
        super().__init__()
        self.kernel, self.coeff, self.n_power_iter = kernel, coeff, n_power_iter
        shape = (cout, cin) if kernel is None else (cout, cin, kernel, kernel)
        fan_in = cin * (1 if kernel is None else kernel * kernel)
        bound = 1.0 / math.sqrt(fan_in)
        self.weight = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(cout).uniform_(-bound, bound))
        self.operator = kernel is not None and kernel > 1
        u_shape, v_shape = ((1, cout) + hw, (1, cin) + hw) if self.operator else ((cout,), (cin,))
        self.register_buffer("u", F.normalize(torch.randn(u_shape).flatten(), dim=0).view(u_shape))
        self.register_buffer("v", F.normalize(torch.randn(v_shape).flatten(), dim=0).view(v_shape))
        self.pad = 0 if kernel is None else kernel // 2

    def apply_map(self, w, t, bias=None):
        """The linear part with weight ``w`` applied to ``t`` (plus ``bias``)."""
        if self.kernel is None:
            return F.linear(t, w, bias)
        return F.conv2d(t, w, bias, padding=self.pad)

    def op(self, w, v):
        return self.apply_map(w, v) if self.operator else w.reshape(w.shape[0], -1) @ v

    def adjoint(self, w, u):
        if self.operator:
            return F.conv_transpose2d(u, w, padding=self.pad)
        return w.reshape(w.shape[0], -1).t() @ u

    def normalized_weight(self):
        if self.training:
            with torch.no_grad():
                w = self.weight
                for _ in range(self.n_power_iter):
                    v = F.normalize(self.adjoint(w, self.u).flatten(), dim=0).view_as(self.v)
                    u = F.normalize(self.op(w, v).flatten(), dim=0).view_as(self.u)
                    self.v.copy_(v)
                    self.u.copy_(u)
        sigma = (self.u * self.op(self.weight, self.v)).sum()
        return self.weight / torch.clamp(sigma / self.coeff, min=1.0)

    def refine(self, iters):
        """Power iteration to (near) convergence, for evaluation."""
        with torch.no_grad():
            for _ in range(iters):
                v = F.normalize(self.adjoint(self.weight, self.u).flatten(), dim=0).view_as(self.v)
                u = F.normalize(self.op(self.weight, v).flatten(), dim=0).view_as(self.u)
                self.v.copy_(v)
                self.u.copy_(u)


class Activation(nn.Module):
    """ELU or LipSwish ``x sigmoid(beta x) / 1.1`` (``beta = softplus(b)``, ``b = 0.5`` at init)."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        if kind == "lipswish":
            self.beta_raw = nn.Parameter(torch.full((1,), 0.5))

    def forward_with_derivative(self, a):
        if self.kind == "elu":
            return F.elu(a), torch.exp(torch.clamp(a, max=0.0))
        beta = F.softplus(self.beta_raw)
        ba = a * beta
        s = torch.sigmoid(ba)
        return a * s / 1.1, (s + ba * s * (1.0 - s)) / 1.1

    def forward(self, a):
        if self.kind == "elu":
            return F.elu(a)
        return a * torch.sigmoid(a * F.softplus(self.beta_raw)) / 1.1


class ResidualNet(nn.Module):
    """g: [act] -> linear -> act -> linear ... (activations between maps, optionally before)."""

    def __init__(self, maps, activation, preactivation):
        super().__init__()
        layers = []
        for i, m in enumerate(maps):
            if i > 0 or preactivation:
                layers.append(Activation(activation))
            layers.append(m)
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        h = x
        for layer in self.layers:
            if isinstance(layer, SpectralLinear):
                h = layer.apply_map(layer.normalized_weight(), h, layer.bias)
            else:
                h = layer(h)
        return h

    def linearize(self, x):
        """``g(x)`` and the tangent maps: ``("linear", layer, W_hat)`` or ``("scale", phi'(a))``."""
        h, maps = x, []
        for layer in self.layers:
            if isinstance(layer, SpectralLinear):
                w = layer.normalized_weight()
                h = layer.apply_map(w, h, layer.bias)
                maps.append(("linear", layer, w))
            else:
                h, d = layer.forward_with_derivative(h)
                maps.append(("scale", d))
        return h, maps

    @staticmethod
    def jvp(maps, t):
        for m in maps:
            t = m[1].apply_map(m[2], t) if m[0] == "linear" else t * m[1]
        return t

    def refine(self, iters):
        for layer in self.layers:
            if isinstance(layer, SpectralLinear):
                layer.refine(iters)


def conv_net(channels, hidden, hw, activation, coeff, n_power_iter):
    """The SPEC's image g: phi -> conv3x3 (C->H) -> phi -> conv1x1 (H->H) -> phi -> conv3x3 (H->C)."""
    maps = [
        SpectralLinear(channels, hidden, 3, hw, coeff, n_power_iter),
        SpectralLinear(hidden, hidden, 1, hw, coeff, n_power_iter),
        SpectralLinear(hidden, channels, 3, hw, coeff, n_power_iter),
    ]
    return ResidualNet(maps, activation, preactivation=True)


def mlp_net(dims, activation, coeff, n_power_iter):
    maps = [SpectralLinear(a, b, None, None, coeff, n_power_iter) for a, b in zip(dims, dims[1:])]
    return ResidualNet(maps, activation, preactivation=False)


def per_sample_sum(t):
    """Sum over every dimension but the first (no copy for channels-last tensors)."""
    return t.sum(dim=tuple(range(1, t.dim())))


def series_coefficients(n):
    return [(1.0 if k % 2 == 1 else -1.0) / k for k in range(1, n + 1)]


def logdet_series(g, x, terms, method):
    """``(g(x), sum_k (-1)^(k+1) v^T J^k v / k)`` per sample, by VJPs (official) or tangent passes."""
    v = torch.randn_like(x)
    total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    w = v
    if method == "official":
        gx = g(x)
        for c in series_coefficients(terms):
            w = torch.autograd.grad(gx, x, grad_outputs=w, retain_graph=True, create_graph=True)[0]
            total = total + per_sample_sum(w * v) * c
        return gx, total
    gx, maps = g.linearize(x)
    for c in series_coefficients(terms):
        w = g.jvp(maps, w)
        total = total + per_sample_sum(w * v) * c
    return gx, total


def logdet_exact(g, x, method):
    """``(g(x), ln det(I + J_g(x)))`` per sample from the full Jacobian (2-D toys)."""
    d = x.shape[1]
    if method == "official":
        gx = g(x)
        rows = [torch.autograd.grad(gx[:, i].sum(), x, create_graph=True)[0] for i in range(d)]
        jac = torch.stack(rows, 1)
    else:
        gx, maps = g.linearize(x)
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        cols = [g.jvp(maps, eye[i].expand_as(x)) for i in range(d)]
        jac = torch.stack(cols, 2)
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    return gx, torch.linalg.slogdet(jac + eye)[1]


class ActNorm(nn.Module):
    """Per-feature ``(x + b) exp(s)`` with data-dependent initialisation; ``ln det = sum s``."""

    def __init__(self, dim):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.initialized = False

    def forward(self, x):
        """Vectors ``[B, D]`` per feature, images ``[B, C, H, W]`` per channel (log-det x H W)."""
        per = x.transpose(0, 1).reshape(x.shape[1], -1)
        if self.training and not self.initialized:
            with torch.no_grad():
                self.bias.copy_(-per.mean(1))
                self.log_scale.copy_(-(per.std(1) + 1e-6).log())
            self.initialized = True
        shape = (1, -1) + (1,) * (x.dim() - 2)
        y = (x + self.bias.view(shape)) * self.log_scale.exp().view(shape)
        pixels = per.shape[1] // x.shape[0]
        return y, (self.log_scale.sum() * pixels).expand(x.shape[0])


def run_layers(layers, h, total, block_logdet):
    """Applies ActNorm layers and i-ResNet blocks in order, adding their log-dets to `total`;
    `block_logdet(g, h)` returns `(g(h), ln det(I + J_g(h)))` of a block."""
    for layer in layers:
        if isinstance(layer, ActNorm):
            h, ld = layer(h)
        else:
            gx, ld = block_logdet(layer, h)
            h = h + gx
        total = total + ld
    return h, total


def standard_normal_log_prob(z):
    return -0.5 * (per_sample_sum(z * z) + z[0].numel() * LN_2PI)


# ----------------------------------------------------------------------------------------------
# Workloads
# ----------------------------------------------------------------------------------------------


class Timer:
    """Wall-clock and process CPU milliseconds of one call (synchronised on CUDA)."""

    def __init__(self, device):
        self.device = device

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def time(self, fn):
        self.sync()
        cpu, start = time.process_time(), time.perf_counter()
        fn()
        self.sync()
        return ((time.perf_counter() - start) * 1e3, (time.process_time() - cpu) * 1e3)


class Bench:
    def __init__(self, args):
        self.args = args
        self.device = torch.device(args.device)
        self.timer = Timer(self.device)

    def block(self):
        a = self.args
        torch.manual_seed(a.seed)
        g = conv_net(a.channels, a.hidden, (a.size, a.size), "elu", a.coeff, a.power_iter)
        return g.to(self.device)

    def block_input(self):
        a = self.args
        x = torch.randn(a.batch, a.channels, a.size, a.size, device=self.device)
        return x.to(memory_format=torch.channels_last) if a.channels_last else x

    def repeat(self, step):
        a = self.args
        for _ in range(a.warmup):
            step()
        return [self.timer.time(step) for _ in range(a.samples)]

    def block_step_fn(self, g, x, terms, method):
        """One training step: forward with log-det, NLL loss, backward, Adam."""
        opt = torch.optim.Adam(g.parameters(), lr=1e-3)
        g.train()

        def step():
            opt.zero_grad(set_to_none=True)
            xin = x.detach().requires_grad_(method == "official")
            gx, ld = logdet_series(g, xin, terms, method)
            loss = -(standard_normal_log_prob(xin + gx) + ld).mean()
            loss.backward()
            opt.step()

        return step

    def block_step(self, rss):
        g, x = self.block(), self.block_input()
        samples = self.repeat(self.block_step_fn(g, x, self.args.terms, self.args.method))
        return summary("block-step", samples, rss)

    def block_forward(self, rss):
        g, x = self.block(), self.block_input()
        g.refine(200)
        g.eval()
        method = self.args.method

        def forward():
            if method == "official":
                xin = x.detach().requires_grad_(True)
                gx, ld = logdet_series(g, xin, self.args.terms, method)
                return (xin + gx).detach(), ld.detach()
            with torch.no_grad():
                gx, ld = logdet_series(g, x, self.args.terms, method)
                return x + gx, ld

        return summary("block-forward", self.repeat(forward), rss)

    def block_inverse(self, rss):
        a = self.args
        g, x = self.block(), self.block_input()
        g.refine(200)
        g.eval()
        with torch.no_grad():
            y = x + g(x)
        stats = {}

        def inverse():
            with torch.no_grad():
                scale = y.abs() * a.rtol + a.atol
                xk = y
                for it in range(1, a.max_iter + 1):
                    nxt = y - g(xk)
                    residual = ((nxt - xk).abs() / scale).max().item()
                    xk = nxt
                    if residual < 1.0:
                        break
                stats.update(iterations=it, residual=residual, x=xk)

        samples = self.repeat(inverse)
        stats["error"] = (stats.pop("x") - x).abs().max().item()
        per_iteration = statistics.median(w for w, _ in samples) / stats["iterations"]
        return summary("block-inverse", samples, rss, per_iteration_ms=per_iteration, **stats)

    def logdet_terms(self, rss):
        """Per-term cost of a training step, both methods: paired (hi - lo) / (hi - lo terms)."""
        lo, hi = 1, 1 + self.args.terms
        out = []
        for method in ("tangent", "vjp"):
            torch_method = "official" if method == "vjp" else "tangent"
            g, x = self.block(), self.block_input()
            step_lo = self.block_step_fn(g, x, lo, torch_method)
            step_hi = self.block_step_fn(g, x, hi, torch_method)
            for _ in range(self.args.warmup):
                step_lo()
                step_hi()
            diffs = []
            for _ in range(self.args.samples):
                t_lo = self.timer.time(step_lo)
                t_hi = self.timer.time(step_hi)
                diffs.append(tuple((h - l) / (hi - lo) for h, l in zip(t_hi, t_lo)))
            out.append(summary(f"logdet-term-{method}", diffs, rss, terms=[lo, hi]))
        return out

    def toy_step(self, rss):
        a = self.args
        torch.manual_seed(a.seed)
        layers = []
        for _ in range(TOY_BLOCKS):
            layers.append(ActNorm(2))
            layers.append(mlp_net([2] + [TOY_WIDTH] * 3 + [2], "lipswish", 0.9, TOY_POWER_ITER))
        model = nn.ModuleList(layers).to(self.device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x = torch.randn(TOY_BATCH, 2, device=self.device)
        method = a.method

        def step():
            opt.zero_grad(set_to_none=True)
            total = torch.zeros(x.shape[0], device=self.device)
            h, total = run_layers(model, x, total, lambda g, h: logdet_exact(g, h, method))
            loss = -(standard_normal_log_prob(h) + total).mean()
            loss.backward()
            opt.step()

        return summary("toy-step", self.repeat(step), rss)

    def mnist_step(self, rss):
        """A training step of genflow's iresnet-mnist model (see MNIST_* above)."""
        torch.manual_seed(self.args.seed)
        scales, shape = [], (1, 28, 28)
        for i, blocks in enumerate(MNIST_SCALES):
            if i > 0:
                shape = (shape[0] * 4, shape[1] // 2, shape[2] // 2)
            layers = []
            for _ in range(blocks):
                layers.append(ActNorm(shape[0]))
                layers.append(conv_net(shape[0], MNIST_HIDDEN, shape[1:], "lipswish", MNIST_COEFF, 1))
            scales.append(nn.ModuleList(layers))
        model = nn.ModuleList(scales).to(self.device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x = torch.rand(MNIST_BATCH, *(1, 28, 28), device=self.device)
        method = self.args.method

        def block_logdet(g, h):
            # the official estimator differentiates g(h) with respect to h
            return logdet_series(g, h.requires_grad_(True) if method == "official" else h,
                                 MNIST_TERMS, method)

        def step():
            opt.zero_grad(set_to_none=True)
            p = MNIST_ALPHA + (1 - 2 * MNIST_ALPHA) * x
            h = torch.log(p) - torch.log1p(-p)
            total = per_sample_sum(math.log(1 - 2 * MNIST_ALPHA) - torch.log(p) - torch.log1p(-p))
            for i, layers in enumerate(model):
                if i > 0:
                    h = F.pixel_unshuffle(h, 2)
                h, total = run_layers(layers, h, total, block_logdet)
            loss = -(standard_normal_log_prob(h) + total).mean()
            loss.backward()
            opt.step()

        return summary("mnist-step", self.repeat(step), rss)

    def matmul(self, rss):
        n = 1024
        a = torch.randn(n, n, device=self.device)
        b = torch.randn(n, n, device=self.device)
        samples = self.repeat(lambda: torch.mm(a, b))
        wall = [w for w, _ in samples]
        gflops = 2 * n**3 / (statistics.median(wall) * 1e-3) / 1e9
        return summary("matmul-1024", samples, rss, gflops=gflops,
                       gflops_max=2 * n**3 / (min(wall) * 1e-3) / 1e9, n=n)

    def run(self, name):
        rss = peak_rss_mb()
        fn = {
            "block-step": self.block_step,
            "block-forward": self.block_forward,
            "block-inverse": self.block_inverse,
            "logdet-terms": self.logdet_terms,
            "toy-step": self.toy_step,
            "mnist-step": self.mnist_step,
            "matmul-1024": self.matmul,
        }[name]
        result = fn(rss)
        return result if isinstance(result, list) else [result]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--workload", action="append", choices=WORKLOADS,
                   help="run only these workloads (repeatable; default: all)")
    p.add_argument("--method", choices=["official", "tangent"], default="official")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: default)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--terms", type=int, default=5)
    p.add_argument("--coeff", type=float, default=0.9)
    p.add_argument("--power-iter", type=int, default=5)
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--max-iter", type=int, default=100)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--channels-last", action="store_true",
                   help="store the block input channels-last (NHWC), as genflow does on the CPU; "
                        "not what the official code does")
    return p.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    bench = Bench(args)
    results = []
    for name in args.workload or WORKLOADS:
        results.extend(bench.run(name))
    report = {
        "implementation": "pytorch",
        "method": args.method,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "config": {k: getattr(args, k) for k in
                   ("batch", "channels", "size", "hidden", "terms", "coeff", "power_iter",
                    "warmup", "samples", "channels_last")},
        "workloads": results,
    }
    if args.json:
        print(json.dumps(report))
        return
    print_table(f"pytorch ({args.method}), {report['threads']} threads, device {args.device}", results)


if __name__ == "__main__":
    main(sys.argv[1:])
