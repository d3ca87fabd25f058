"""Trains genflow's image density model in plain PyTorch with genflow's recipe, for comparing the
test bits/dim of the two implementations (the model code is `image_flow_reference.py`'s).

The recipe follows a genflow run configuration (a preset file or a run's `config.toml`, with
`--set key=value` overrides as in `genflow train`):
* the same parameter initialisation: `torch.manual_seed(seed)`, then PyTorch's default conv
  initialisation and random unit `u`, `v`, drawn layer by layer in genflow's order (so the initial
  weights equal genflow's);
* batches of `train.batch_size` from a fresh permutation of the training images every epoch
  (`torch.randperm`, not genflow's order), uniform dequantisation `(x + u) / L`;
* the loss: mean bits/dim with the blocks' log-dets from the truncated series
  `sum_{k<=n} (-1)^(k+1)/k v^T J^k v` (`train.logdet`, one Gaussian or Rademacher probe per sample),
  computed with vector-Jacobian products through a graph (`create_graph=True`, the official i-ResNet
  method; genflow uses tangent passes, which give the same value and gradient for the same probe);
* ActNorm's data-dependent initialisation on the first batch; `n_power_iter` power iterations per
  conv per step; `torch.optim` with the same settings, the warm-up + cosine schedule of genflow
  (`m(t) = (t+1)/w` for `t < w`, then `(1 + cos(pi (t - w)/(T - w)))/2`) and
  `clip_grad_norm_(global_clip_norm)`;
* an exponential moving average (`train.ema_decay`) of the trainable weights that, as genflow's
  `Ema`, starts as a copy of the weights after the first optimiser step (so ActNorm's data-dependent
  initialisation is not averaged with its pre-initialisation values).

At the end it writes `OUT/checkpoint.safetensors` in genflow's format (live weights, `ema.*`, the
config in the metadata), so `genflow eval --run OUT` can evaluate it too, and reports the midpoint test
bits/dim of the averaged weights after refining the spectral norms, with the exact log-det
(`image_flow_reference.midpoint_bits_per_dim`).

Run (about 2 minutes on one thread for 120 steps):
    genflow --threads 1 train --config iresnet-digits --out runs/digits-short \
        --set train.epochs=5 --set optim.schedule.total_steps=120
    genflow --threads 1 eval --run runs/digits-short --json > runs/digits-short.eval.json
    OMP_NUM_THREADS=1 PYTHONPATH=$HOME/.cache/genflow/torch-2.13.0 python3 \
        benches/pytorch/train_image_flow.py --config presets/iresnet-digits.toml \
        --set train.epochs=5 --set optim.schedule.total_steps=120 \
        --out runs/digits-short-torch --compare runs/digits-short.eval.json
"""
import argparse
import json
import math
import os
import sys
import time
import tomllib

import image_flow_reference as ref
import torch

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "adamax": torch.optim.Adamax}


def load_config(path, overrides):
    """The TOML file with `key.path=value` overrides (values parsed as TOML, else strings)."""
    with open(path, "rb") as f:
        config = tomllib.load(f)
    for item in overrides:
        key, _, text = item.partition("=")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        *parents, leaf = key.strip().split(".")
        table = config
        for name in parents:
            table = table.setdefault(name, {})
        table[leaf] = value
    return config


def toml_text(table, prefix=""):
    """A TOML document for nested dicts of strings, numbers, booleans and lists."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        return "[" + ", ".join(value(x) for x in v) + "]"

    lines = [f"{k} = {value(v)}" for k, v in table.items() if not isinstance(v, dict) and v is not None]
    for k, v in table.items():
        if isinstance(v, dict):
            lines += ["", f"[{prefix}{k}]", toml_text(v, f"{prefix}{k}.")]
    return "\n".join(lines)


def lr_multiplier(schedule, run_steps):
    """genflow's schedule `m(t)` for the update after `t` steps (constant, warmup or cosine; a
    cosine without `total_steps` decays over the run's `run_steps`, as in genflow)."""
    kind, warmup = schedule.get("kind", "constant"), schedule.get("warmup_steps", 0)
    total = schedule.get("total_steps", max(run_steps, warmup + 1))
    if kind not in ("constant", "warmup", "linear_warmup", "cosine"):
        sys.exit(f"schedule {kind!r} is not supported here")

    def m(t):
        if t < warmup:
            return (t + 1) / warmup
        if kind != "cosine":
            return 1.0
        final = schedule.get("final_mult", 0.0)
        progress = min((t - warmup) / (total - warmup), 1.0)
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))
    return m


def series_logdet(terms, probe_kind):
    """`sum_{k<=terms} (-1)^(k+1)/k v^T J_g^k v` per sample by vector-Jacobian products."""
    def logdet(gx, x):
        v = torch.randn_like(x)
        if probe_kind == "rademacher":
            v = (torch.rand_like(x) >= 0.5).to(x.dtype) * 2 - 1
        w, total = v, torch.zeros(x.shape[0], dtype=x.dtype)
        for k in range(1, terms + 1):
            (w,) = torch.autograd.grad(gx, x, w, create_graph=True)
            total = total + (-1) ** (k + 1) / k * (w * v).flatten(1).sum(1)
        return total
    return logdet


def train(config, out_dir, log=print):
    """Trains per `config`; writes `out_dir/checkpoint.safetensors`; returns `(steps, seconds)`."""
    seed, train_cfg, optim_cfg = config.get("seed", 0), config["train"], config["optim"]
    estimator = train_cfg.get("logdet", {"kind": "series", "terms": 5})
    if estimator.get("kind") != "series":
        sys.exit(f"train.logdet {estimator} is not supported here (series only)")
    torch.manual_seed(seed)
    model = ref.ImageFlow(ref.image_model_config(config))
    train_set, _ = ref.load_digits(config)
    if config.get("data", {}).get("train_subset"):
        train_set = train_set[:config["data"]["train_subset"]]
    batch = train_cfg["batch_size"]
    per_epoch = math.ceil(train_set.shape[0] / batch)
    steps = train_cfg.get("steps") or train_cfg.get("epochs", 1) * per_epoch
    params = [p for p in model.parameters()]
    decay = train_cfg.get("ema_decay")
    ema = None  # started after the first step
    kind = optim_cfg["kind"]
    if kind not in OPTIMIZERS:
        sys.exit(f"optim.kind {kind!r} is not supported here ({', '.join(OPTIMIZERS)})")
    extra = {"weight_decay": optim_cfg["weight_decay"]} if "weight_decay" in optim_cfg else {}
    optimizer = OPTIMIZERS[kind](params, lr=optim_cfg["lr"],
                                 betas=tuple(optim_cfg.get("betas", (0.9, 0.999))),
                                 eps=optim_cfg.get("eps", 1e-8), **extra)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(optim_cfg.get("schedule", {}), steps))
    logdet_fn = series_logdet(estimator.get("terms", 5), estimator.get("probe", "gaussian"))
    data_rng = torch.Generator().manual_seed(seed)
    model.train()
    started = time.time()
    for step in range(steps):
        if step % per_epoch == 0:
            order = torch.randperm(train_set.shape[0], generator=data_rng)
        index = order[(step % per_epoch) * batch:(step % per_epoch + 1) * batch]
        x = train_set[index].float()
        x = (x + torch.rand_like(x)) / model.levels
        z, logdet = model.transform(x, logdet_fn)
        loss = model.bits_per_dim(model.base_log_prob(z) + logdet).mean()
        optimizer.zero_grad()
        loss.backward()
        if optim_cfg.get("global_clip_norm"):
            torch.nn.utils.clip_grad_norm_(params, optim_cfg["global_clip_norm"])
        optimizer.step()
        scheduler.step()
        if decay and ema is None:
            ema = {n: p.detach().clone() for n, p in model.named_parameters()}
        elif decay:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    ema[n].mul_(decay).add_(p.detach() * (1 - decay))
        if (step + 1) % train_cfg.get("log_every", 50) == 0 or step + 1 == steps:
            log(json.dumps({"step": step + 1, "loss": loss.item(), "time_s": time.time() - started}))
    seconds = time.time() - started
    tensors = dict(model.state_dict())
    if ema is not None:
        tensors.update({"ema." + n: t for n, t in ema.items()})
    os.makedirs(out_dir, exist_ok=True)
    ref.write_safetensors(os.path.join(out_dir, "checkpoint.safetensors"), tensors,
                          {"format": "pt", "genflow_step": str(steps), "genflow_config": toml_text(config),
                           "genflow_format": "2" if "model" in config else "1"})
    return steps, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="a genflow TOML config (e.g. presets/...)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", required=True, help="run folder to write the checkpoint into")
    parser.add_argument("--compare", help="`genflow eval --json` of the genflow run to compare with")
    parser.add_argument("--tol", type=float, default=0.05, help="allowed |difference| in bits/dim")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_config(args.config, args.set)
    steps, seconds = train(config, args.out, log=lambda line: print(line, file=sys.stderr))
    model, config, _ = ref.load_run(args.out, torch.float64)
    iters = model.refine()
    _, test = ref.load_digits(config)
    report = {"out": args.out, "steps": steps, "train_seconds": round(seconds, 1),
              "refine_iters_max": iters,
              "test_bits_per_dim_midpoint": ref.midpoint_bits_per_dim(model, test)}
    failed = False
    if args.compare:
        with open(args.compare) as f:
            genflow = json.load(f)["test_bits_per_dim_midpoint"]
        report["genflow_test_bits_per_dim_midpoint"] = genflow
        report["difference"] = report["test_bits_per_dim_midpoint"] - genflow
        failed = abs(report["difference"]) > args.tol
    print(json.dumps(report, indent=1))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
