"""An independent PyTorch implementation of genflow's image density model (`src/models/image_flow.rs`),
and a check of `genflow eval`'s deterministic test bits/dim from a run's checkpoint.

As a script it reads `RUN_DIR/checkpoint.safetensors` (parsed here with `json` + `struct`: an 8-byte
little-endian header length, a JSON header, raw little-endian data), takes the TOML config from the
metadata `genflow_config`, builds the model below (no genflow code), loads the parameters under
genflow's documented names (`scales.<i>.actnorms.<j>.{bias,log_scale,initialized}`,
`scales.<i>.blocks.<j>.g.<k>.{weight,bias,u,v,sigma}`, `scales.<i>.blocks.<j>.g.<k>.beta`,
`base.{mean,log_std}`), replaces the trainable ones with their moving averages `ema.<name>` when the
checkpoint holds them, refines the spectral-norm vectors as `genflow eval` does, and computes the mean
test bits/dim with midpoint dequantisation `x_scaled = (x + 1/2) / L` and the EXACT log-determinant of
the whole map `x_scaled -> z` (its full Jacobian by reverse-mode autodiff, one pass per latent entry,
then `slogdet`), so neither genflow's per-layer log-det formulas nor its estimators are reused:

    bits/dim = (-(log N(z; 0, I) + ln|det dz/dx|) / D + ln L) / ln 2

Run (prints JSON; with --compare, exits 1 when the two differ by more than --tol):
    genflow --threads 1 eval --run RUN_DIR --json > eval.json
    OMP_NUM_THREADS=1 PYTHONPATH=$HOME/.cache/genflow/torch-2.13.0 \
        python3 benches/pytorch/image_flow_reference.py RUN_DIR --compare eval.json

The model classes, the safetensors reader/writer and the digits loader are shared with
`train_image_flow.py`, which trains the same model in PyTorch.

Model (genflow's layout, `scales = [n_0, n_1, ...]`):
    x_scaled -> logit(alpha + (1 - 2 alpha) x) -> scale 0: (ActNorm -> x + g(x)) x n_0
             -> squeeze 2x2 (pixel_unshuffle: channel 4c + 2i + j holds pixel (2h + i, 2w + j))
             [-> factor out the first half of the channels] -> scale 1 ... -> z (flat, pieces in order)
    g = conv_k3 o phi o conv_k2 o phi o conv_k1 o phi,  phi = LipSwish x sigmoid(softplus(b) x) / 1.1,
    every conv W used as W / max(1, sigma / c), sigma = <u, W v> from power-iteration vectors u, v
    (on the conv operator at the scale's spatial size for k > 1; on the weight matrix for k = 1).
"""
import argparse
import gzip
import json
import math
import os
import struct
import sys
import tomllib
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")  # torch only, no numpy here
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# --------------------------------------------------------------------------- safetensors I/O

DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64, "I32": torch.int32,
          "U8": torch.uint8}


def read_safetensors(path):
    """`({name: tensor}, metadata)` of a safetensors file."""
    with open(path, "rb") as f:
        raw = f.read()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + header_len])
    metadata = header.pop("__metadata__", {})
    data = raw[8 + header_len:]
    tensors = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        dtype = DTYPES[info["dtype"]]
        flat = torch.frombuffer(bytearray(data[start:end]), dtype=dtype) if end > start \
            else torch.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(info["shape"]).clone()
    return tensors, metadata


def write_safetensors(path, tensors, metadata):
    """Writes `{name: tensor}` (CPU, little-endian) with string metadata, names sorted."""
    names = {v: k for k, v in DTYPES.items()}
    header, chunks, offset = {"__metadata__": metadata}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        blob = bytes(t.reshape(-1).view(torch.uint8).tolist())  # no numpy needed
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        chunks.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))
    os.replace(path + ".tmp", path)


# --------------------------------------------------------------------------- data

DIGITS_TRAIN = 1500  # genflow's split: rows 0..1500 train, the other 297 test


def data_dir(config):
    """genflow's data folder: `data.dir`, else `$GENFLOW_DATA`, else `~/.cache/genflow/data`."""
    configured = config.get("data", {}).get("dir")
    if configured:
        return configured
    return os.environ.get("GENFLOW_DATA") or os.path.join(os.path.expanduser("~"), ".cache",
                                                          "genflow", "data")


def load_digits(config):
    """`(train, test)` digits images `[N, 1, 8, 8]` (uint8 levels 0..16) from `digits/digits.csv.gz`."""
    dataset = config.get("data", {}).get("dataset")
    if dataset != "digits":
        sys.exit(f"only the digits data set is supported (64 dimensions), got {dataset!r}")
    path = os.path.join(data_dir(config), "digits", "digits.csv.gz")
    with gzip.open(path, "rt") as f:
        rows = [[int(float(v)) for v in line.split(",")[:64]] for line in f if line.strip()]
    images = torch.tensor(rows, dtype=torch.uint8).reshape(-1, 1, 8, 8)
    return images[:DIGITS_TRAIN], images[DIGITS_TRAIN:]


# --------------------------------------------------------------------------- model

IMAGE_DEFAULTS = {"scales": [4, 4], "hidden": 64, "kernels": [3, 1, 3], "activation": "lipswish",
                  "actnorm": True, "factor_out": False, "logit_alpha": None,
                  "base": "standard_normal", "levels": 256,
                  "spectral": {"coeff": 0.9, "n_power_iter": 5}}


def image_model_config(config):
    """The image flow's `[model]` (`[image_model]` in checkpoints of config format 1) with
    genflow's defaults filled in."""
    given = config["model"] if "model" in config else config["image_model"]
    model = {**IMAGE_DEFAULTS, **given}
    model["spectral"] = {**IMAGE_DEFAULTS["spectral"], **given.get("spectral", {})}
    return model


def _normalize(t):
    return t / (t.norm() + 1e-12)


class SpectralConv(torch.nn.Module):
    """A conv (odd kernel, stride 1, same padding) with weight `W / max(1, sigma / c)`."""

    def __init__(self, cin, cout, kernel, hw, coeff, n_power_iter):
        super().__init__()
        self.padding, self.coeff, self.n_power_iter = kernel // 2, coeff, n_power_iter
        bound = 1.0 / math.sqrt(cin * kernel * kernel)  # PyTorch's default conv initialisation
        self.weight = torch.nn.Parameter(torch.empty(cout, cin, kernel, kernel).uniform_(-bound, bound))
        self.bias = torch.nn.Parameter(torch.empty(cout).uniform_(-bound, bound))
        # the matrix power iteration for 1x1 kernels, the operator one at size hw otherwise
        self.matrix = kernel == 1
        ushape, vshape = ([cout], [cin]) if self.matrix else ([1, cout, *hw], [1, cin, *hw])
        self.register_buffer("u", _normalize(torch.randn(ushape)))
        self.register_buffer("v", _normalize(torch.randn(vshape)))
        self.register_buffer("sigma", torch.zeros(1))

    def _apply_w(self, w, v):
        if self.matrix:
            return w.reshape(w.shape[0], -1) @ v
        return F.conv2d(v, w, padding=self.padding)

    def _apply_wt(self, w, u):
        if self.matrix:
            return w.reshape(w.shape[0], -1).t() @ u
        return F.conv_transpose2d(u, w, padding=self.padding)

    @torch.no_grad()
    def power_iteration(self, n):
        w = self.weight.detach()
        for _ in range(n):
            v = _normalize(self._apply_wt(w, self.u))
            u = _normalize(self._apply_w(w, v))
            self.v.copy_(v)
            self.u.copy_(u)

    def sigma_estimate(self):
        return (self.u * self._apply_w(self.weight, self.v)).sum()

    @torch.no_grad()
    def refine(self, tol=1e-7, max_iter=2000):
        """Power iteration until sigma changes by at most `tol` relatively (`genflow eval`)."""
        previous = math.inf
        for i in range(1, max_iter + 1):
            self.power_iteration(1)
            sigma = self.sigma_estimate().item()
            if abs(sigma - previous) <= tol * abs(sigma):
                return i
            previous = sigma
        return max_iter

    def forward(self, x):
        if self.training:
            self.power_iteration(self.n_power_iter)
        sigma = self.sigma_estimate()
        if self.training:
            self.sigma.copy_(sigma.detach().reshape(1))
        w = self.weight / torch.clamp(sigma / self.coeff, min=1.0)
        return F.conv2d(x, w, self.bias, padding=self.padding)


class Activation(torch.nn.Module):
    """LipSwish `x sigmoid(softplus(b) x) / 1.1` (parameter `beta` = b, initial 0.5), ELU or softplus."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        if kind == "lipswish":
            self.beta = torch.nn.Parameter(torch.full([1], 0.5))
        elif kind not in ("elu", "softplus"):
            sys.exit(f"activation {kind!r} is not supported by this reference")

    def forward(self, x):
        if self.kind == "lipswish":
            return x * torch.sigmoid(F.softplus(self.beta) * x) / 1.1
        return F.elu(x) if self.kind == "elu" else F.softplus(x)


class ActNorm(torch.nn.Module):
    """`(x + b) exp(s)` per channel; `b = -mean`, `s = -ln std` from the first training batch."""

    def __init__(self, channels):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(channels))
        self.log_scale = torch.nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.zeros(1))

    @torch.no_grad()
    def _initialize(self, x):
        per_channel = x.transpose(0, 1).reshape(x.shape[1], -1)
        std = per_channel.std(dim=1, unbiased=False)
        self.bias.copy_(-per_channel.mean(dim=1))
        # channels without variance keep scale 1 (as genflow, threshold 1e-3)
        self.log_scale.copy_(torch.where(std > 1e-3, -std.clamp_min(1e-3).log(), torch.zeros_like(std)))
        self.initialized.fill_(1.0)

    def forward(self, x):
        if self.training and self.initialized.item() < 0.5:
            self._initialize(x)
        y = (x + self.bias[None, :, None, None]) * self.log_scale.exp()[None, :, None, None]
        logdet = self.log_scale.sum() * x.shape[2] * x.shape[3]
        return y, logdet.expand(x.shape[0])


class ResidualBlock(torch.nn.Module):
    """`y = x + g(x)` with the pre-activation conv net `g` (layers `g.0`, `g.1`, ... as in genflow)."""

    def __init__(self, shape, model):
        super().__init__()
        channels, h, w = shape
        kernels, spectral = model["kernels"], model["spectral"]
        layers = []
        for i, k in enumerate(kernels):
            cin = channels if i == 0 else model["hidden"]
            cout = channels if i + 1 == len(kernels) else model["hidden"]
            layers.append(Activation(model["activation"]))
            layers.append(SpectralConv(cin, cout, k, (h, w), spectral["coeff"], spectral["n_power_iter"]))
        self.g = torch.nn.Sequential(*layers)

    def forward(self, x, logdet_fn=None):
        """`(x + g(x), logdet_fn(g(x), x))`; the log-det is 0 without an estimator."""
        if logdet_fn is None:
            return x + self.g(x), torch.zeros(x.shape[0], dtype=x.dtype)
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        gx = self.g(x)
        return x + gx, logdet_fn(gx, x)


class Scale(torch.nn.Module):
    def __init__(self, shape, blocks, model):
        super().__init__()
        self.actnorms = torch.nn.ModuleList(
            [ActNorm(shape[0]) for _ in range(blocks)] if model["actnorm"] else [])
        self.blocks = torch.nn.ModuleList()
        for _ in range(blocks):
            self.blocks.append(ResidualBlock(shape, model))


class ImageFlow(torch.nn.Module):
    """genflow's `ImageFlow`; `state_dict()` names equal genflow's checkpoint names."""

    def __init__(self, model):
        super().__init__()
        if model["base"] not in ("standard_normal", "diagonal_gaussian"):
            sys.exit(f"base {model['base']!r} is not supported by this reference")
        self.alpha, self.levels = model["logit_alpha"], model["levels"]
        self.factor_out = model["factor_out"]
        shape = list(model["in_shape"])
        self.dims = shape[0] * shape[1] * shape[2]
        # parameters are created (and drawn) in genflow's order: scale by scale, block by block
        self.scales = torch.nn.ModuleList()
        for i, blocks in enumerate(model["scales"]):
            if i > 0:
                shape = [shape[0] * (2 if self.factor_out else 4), shape[1] // 2, shape[2] // 2]
            self.scales.append(Scale(shape, blocks, model))
        if model["base"] == "diagonal_gaussian":
            self.base = torch.nn.Module()
            self.base.mean = torch.nn.Parameter(torch.zeros(self.dims))
            self.base.log_std = torch.nn.Parameter(torch.zeros(self.dims))

    def transform(self, x, logdet_fn=None):
        """`(z, ln|det|)` for images scaled to [0, 1): the logit and ActNorm log-dets exactly, the
        blocks' from `logdet_fn(g(x), x)` (left out when it is None)."""
        logdet = torch.zeros(x.shape[0], dtype=x.dtype)
        h = x
        if self.alpha is not None:
            p = self.alpha + (1 - 2 * self.alpha) * h
            h = torch.log(p) - torch.log1p(-p)
            per_entry = math.log(1 - 2 * self.alpha) - torch.log(p) - torch.log1p(-p)
            logdet = logdet + per_entry.flatten(1).sum(1)
        pieces = []
        for i, scale in enumerate(self.scales):
            if i > 0:
                h = F.pixel_unshuffle(h, 2)
                if self.factor_out:
                    half = h.shape[1] // 2
                    pieces.append(h[:, :half].flatten(1))
                    h = h[:, half:]
            for j, block in enumerate(scale.blocks):
                if len(scale.actnorms) > 0:
                    h, ld = scale.actnorms[j](h)
                    logdet = logdet + ld
                h, ld = block(h, logdet_fn)
                logdet = logdet + ld
        pieces.append(h.flatten(1))
        return torch.cat(pieces, 1), logdet

    def base_log_prob(self, z):
        if hasattr(self, "base"):
            e = (z - self.base.mean) * torch.exp(-self.base.log_std)
            return -(0.5 * e ** 2 + self.base.log_std + 0.5 * math.log(2 * math.pi)).sum(1)
        return -0.5 * (z ** 2).sum(1) - 0.5 * self.dims * math.log(2 * math.pi)

    def bits_per_dim(self, log_prob):
        return (-log_prob / self.dims + math.log(self.levels)) / math.log(2)

    def spectral_convs(self):
        return [m for m in self.modules() if isinstance(m, SpectralConv)]

    def refine(self, tol=1e-7, max_iter=2000):
        """Runs every conv's power iteration to convergence; returns the most iterations needed."""
        return max(conv.refine(tol, max_iter) for conv in self.spectral_convs())


def exact_log_det(model, x):
    """`ln|det dz/dx|` per sample of the whole map, from its full Jacobian (one backward per entry)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        z, _ = model.transform(x)
        rows = [torch.autograd.grad(z[:, i].sum(), x, retain_graph=True)[0].flatten(1)
                for i in range(z.shape[1])]
    jacobian = torch.stack(rows, 1)  # [batch, out, in]; samples do not interact
    return z.detach(), torch.linalg.slogdet(jacobian).logabsdet


def midpoint_bits_per_dim(model, images, batch=256):
    """Mean test bits/dim with `x_scaled = (x + 1/2) / L` and the exact log-det, in the model's dtype."""
    model.eval()
    dtype = next(model.parameters()).dtype
    total = 0.0
    for chunk in images.split(batch):
        x = (chunk.to(dtype) + 0.5) / model.levels
        z, logdet = exact_log_det(model, x)
        total += model.bits_per_dim(model.base_log_prob(z) + logdet).sum().item()
    return total / images.shape[0]


def load_run(run_dir, dtype, checkpoint="checkpoint.safetensors"):
    """The model of a genflow run folder with the averaged weights, and its config."""
    tensors, metadata = read_safetensors(os.path.join(run_dir, checkpoint))
    config = tomllib.loads(metadata["genflow_config"])
    if config.get("task") != "image-density":
        sys.exit(f"{run_dir} is not an image-density run (task {config.get('task')!r})")
    model = ImageFlow(image_model_config(config))
    state = {name: tensors[name] for name in model.state_dict()}
    trainable = {name for name, _ in model.named_parameters()}
    averaged = sorted(name for name in trainable if "ema." + name in tensors)
    for name in averaged:
        state[name] = tensors["ema." + name]
    model.load_state_dict(state, strict=True)
    return model.to(dtype), config, {"ema": len(averaged) > 0, "step": int(metadata["genflow_step"])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                        help="precision of the refinement and evaluation (checkpoints hold float32)")
    parser.add_argument("--compare", help="a `genflow eval --json` output to compare with")
    parser.add_argument("--tol", type=float, default=1e-3, help="allowed |difference| in bits/dim")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, config, info = load_run(args.run_dir, getattr(torch, args.dtype))
    iters = model.refine()
    _, test = load_digits(config)
    bpd = midpoint_bits_per_dim(model, test)
    report = {"run": args.run_dir, "step": info["step"], "ema_weights": info["ema"],
              "dtype": args.dtype, "refine_iters_max": iters, "test_images": test.shape[0],
              "test_bits_per_dim_midpoint": bpd}
    failed = False
    if args.compare:
        with open(args.compare) as f:
            genflow = json.load(f)["test_bits_per_dim_midpoint"]
        report["genflow_test_bits_per_dim_midpoint"] = genflow
        report["abs_difference"] = abs(bpd - genflow)
        failed = report["abs_difference"] > args.tol
    print(json.dumps(report, indent=1))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
