#!/usr/bin/env python3
"""The GAN workloads of `genflow bench` in PyTorch, for a like-for-like comparison on the same libtorch.

Run with the torch wheel genflow builds against (libtorch 2.13.0):

    PYTHONPATH=$HOME/.cache/genflow/torch-2.13.0 python3 benches/pytorch/gan_bench.py --threads 1 --json

* ``gan-step``: one training step of genflow's ``gan-mnist`` preset as a PyTorch DCGAN loop writes it:
  ``fake = G(z)``; ``opt_d.zero_grad(); L_D(D(x), D(fake.detach())).backward(); opt_d.step()``;
  ``opt_g.zero_grad(); L_G(D(fake)).backward(); opt_g.step()`` with two optimisers.
* ``ogan-step``: one training step of the ``ogan-mnist`` preset, the O-GAN reference's single loss
  ``L_D + L_G(D(fake)) - L_G(D(fake.detach()))`` with GAN-QP and ``-lambda rho(z, E(G(z)))``: one
  backward pass, one optimiser over both nets.

Both read the preset's TOML file (``presets/<name>.toml``: model sizes, loss, update rule, optimiser),
build the same networks as genflow (``src/gan/nets.rs``: DCGAN-style convs with batch norm,
LeakyReLU(0.2), ``N(0, 0.02)`` weights), draw a fixed batch of uniform images in ``[-1, 1]`` and
fresh latents every step, and read the logged scalars (losses, mean scores, rho) back each step as
a training loop does. The JSON printed with ``--json`` has the layout of ``genflow bench --json`` so
that ``benches/compare`` can divide one by the other.
"""

import argparse
import json
import os
import sys
import time
import tomllib
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from bench_report import peak_rss_mb, print_table, summary  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKLOADS = {"gan-step": "gan-mnist", "ogan-step": "ogan-mnist"}
LEAKY_SLOPE = 0.2
INIT_STD = 0.02


def preset(name):
    with open(os.path.join(ROOT, "presets", f"{name}.toml"), "rb") as f:
        return tomllib.load(f)


def init_(module):
    """genflow's initialisation: N(0, 0.02) weights, zero biases, batch-norm scales 1."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, INIT_STD)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """Linear(z -> w 2^(L-1) h w) -> BN -> ReLU, (L - 1) x [convT -> BN -> ReLU], convT -> tanh."""

    def __init__(self, m):
        super().__init__()
        if m.get("generator_norm", "batch") != "batch":
            sys.exit("error: the benchmark's generator has batch norm only")
        c, h, w = m["image_shape"]
        levels, width, k = m["levels"], m["width"], m.get("kernel", 4)
        self.top, self.base = width << (levels - 1), (h >> levels, w >> levels)
        self.fc = nn.Linear(m["z_dim"], self.top * self.base[0] * self.base[1], bias=False)
        self.bn0 = nn.BatchNorm2d(self.top)
        layers = []
        for j in range(1, levels):
            cin, cout = width << (levels - j), width << (levels - j - 1)
            layers += [nn.ConvTranspose2d(cin, cout, k, 2, (k - 1) // 2, k % 2, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU()]
        layers += [nn.ConvTranspose2d(width, c, k, 2, (k - 1) // 2, k % 2), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z):
        h = self.fc(z).view(-1, self.top, *self.base)
        return self.body(F.relu(self.bn0(h)))


class Discriminator(nn.Module):
    """conv -> LeakyReLU, (L - 1) x [conv -> BN -> LeakyReLU], Linear(-> n_out)."""

    def __init__(self, m):
        super().__init__()
        c, h, w = m["image_shape"]
        levels, width, k = m["levels"], m["width"], m.get("kernel", 4)
        layers, cin = [], c
        for i in range(levels):
            cout = width << i
            layers.append(nn.Conv2d(cin, cout, k, 2, (k - 1) // 2))
            if i > 0 and m.get("discriminator_batch_norm", True):
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(LEAKY_SLOPE))
            cin = cout
        self.body = nn.Sequential(*layers, nn.Flatten())
        n_out = m["z_dim"] if m.get("encoder", False) else 1
        self.head = nn.Linear(cin * (h >> levels) * (w >> levels), n_out)

    def forward(self, x):
        return self.head(self.body(x))


def correlation(a, b):
    """Pearson's correlation per row (O-GAN's `correlation`)."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
    b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (a * b).sum(1)


class Losses:
    """L_D and L_G of the preset's loss, with O-GAN's correlation term (genflow's `gan::loss`)."""

    def __init__(self, train, encoder):
        loss = train.get("loss", "non-saturating")
        self.kind = loss if isinstance(loss, str) else next(iter(loss))
        qp = {} if isinstance(loss, str) else loss[self.kind]
        self.qp_lambda, self.qp_distance = qp.get("lambda", 10.0), qp.get("distance", "l1")
        self.rho_weight = train.get("rho_weight", 0.5) if encoder else 0.0
        self.encoder = encoder

    def d_loss(self, d_r, d_f, x_r, x_f):
        if self.kind == "non-saturating":
            return F.softplus(-d_r).mean() + F.softplus(d_f).mean()
        if self.kind == "hinge":
            return F.relu(1 - d_r).mean() + F.relu(1 + d_f).mean()
        t = d_r - d_f
        diff = x_r - x_f
        dist = (diff.abs() if self.qp_distance == "l1" else diff.square()).mean((1, 2, 3))
        return (-t + t.square() / (2 * self.qp_lambda * dist)).mean()

    def g_loss(self, d_r, d_f):
        if self.kind == "non-saturating":
            return F.softplus(-d_f).mean()
        if self.kind == "hinge":
            return -d_f.mean()
        return (d_r - d_f).mean()

    def rho_term(self, z, code):
        return -self.rho_weight * correlation(z, code).mean() if self.encoder else 0.0


def optimizer(params, optim):
    kind, lr = optim["kind"], optim["lr"]
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(optim.get("betas", (0.9, 0.999))),
                                eps=optim.get("eps", 1e-8))
    if kind == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=optim.get("alpha", 0.99),
                                   eps=optim.get("eps", 1e-8))
    sys.exit(f"error: the benchmark knows adam and rmsprop, not {kind}")


class GanStep:
    """One training step of an image-GAN preset."""

    def __init__(self, name, batch, device):
        cfg = preset(name)
        m, train = cfg["model"], cfg["train"]
        if cfg["optim"].get("groups"):
            sys.exit("error: the benchmark's optimisers have no parameter groups")
        self.g, self.d = Generator(m).to(device), Discriminator(m).to(device)
        init_(self.g)
        init_(self.d)
        self.losses = Losses(train, m.get("encoder", False))
        self.single = train.get("update", "alternating") == "single-loss"
        if self.single:
            self.opt = optimizer(list(self.g.parameters()) + list(self.d.parameters()), cfg["optim"])
        else:
            self.opt_d = optimizer(self.d.parameters(), cfg["optim"])
            self.opt_g = optimizer(self.g.parameters(), cfg["optim"])
        self.x = torch.rand(batch, *m["image_shape"], device=device) * 2 - 1
        self.z_dim, self.device = m["z_dim"], device

    def judge(self, x):
        code = self.d(x)
        return code, code.mean(1)

    def __call__(self):
        z = torch.randn(self.x.shape[0], self.z_dim, device=self.device)
        fake = self.g(z)
        fake_ng = fake.detach()
        L = self.losses
        code_r, d_r = self.judge(self.x)
        code_fng, d_fng = self.judge(fake_ng)
        d_loss = L.d_loss(d_r, d_fng, self.x, fake_ng) + L.rho_term(z, code_fng)
        if self.single:
            code_f, d_f = self.judge(fake)
            g_loss = L.g_loss(d_r, d_f) + L.rho_term(z, code_f)
            g_ng = L.g_loss(d_r, d_fng) + L.rho_term(z, code_fng)
            loss = d_loss + (g_loss - g_ng)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
        else:
            self.opt_d.zero_grad()
            d_loss.backward()
            self.opt_d.step()
            code_f, d_f = self.judge(fake)
            g_loss = L.g_loss(d_r.detach(), d_f) + L.rho_term(z, code_f)
            self.opt_g.zero_grad()
            g_loss.backward()
            self.opt_g.step()
        logged = [d_loss.item(), g_loss.item(), d_r.mean().item(), d_fng.mean().item()]
        if L.encoder:
            with torch.no_grad():
                logged.append(correlation(z, code_fng).mean().item())
        return logged


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    cpu, start = time.process_time(), time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3, (time.process_time() - cpu) * 1e3


def run(name, args):
    rss = peak_rss_mb()
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    step = GanStep(WORKLOADS[name], args.batch, device)
    for _ in range(args.warmup):
        step()
    samples = [timed(step, device) for _ in range(args.samples)]
    return summary(name, samples, rss, update="single-loss" if step.single else "alternating")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--workload", action="append", choices=list(WORKLOADS),
                   help="run only these workloads (repeatable; default: all)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: default)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    results = [run(name, args) for name in args.workload or WORKLOADS]
    report = {
        "implementation": "pytorch", "method": "gan", "device": args.device,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "config": {k: getattr(args, k) for k in ("batch", "warmup", "samples")},
        "workloads": results,
    }
    if args.json:
        print(json.dumps(report))
        return
    print_table(f"pytorch, {report['threads']} threads, device {args.device}", results)


if __name__ == "__main__":
    main(sys.argv[1:])
