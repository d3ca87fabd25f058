"""Reference trajectories of torch.optim for genflow's optimisers (tests/optim_pytorch.rs).

Two float64 parameters, "a.weight" (3x2) and "b.bias" (4), get the same fixed gradient sequence
(seeded randn, independent of the parameters) in every case. Each case is a genflow `[optim]`
configuration (the JSON form of `OptimConfig`); this script translates it into the PyTorch optimiser
of the same name with one param group per genflow group (lr * lr_mult, the group's weight decay),
PyTorch's clip utilities for the transforms, and the matching lr scheduler, then records the
parameters after every step.

Run from the repository root (writes tests/fixtures/optim_pytorch.json):
    scripts/with-libtorch sh -c 'PYTHONPATH=$GENFLOW_TORCH_SITE python3 benches/pytorch/optim_reference.py'
"""
import fnmatch
import json
import math
import os

import torch

STEPS = 5
SHAPES = {"a.weight": [3, 2], "b.bias": [4]}
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "optim_pytorch.json")

CASES = [
    ("sgd", {"kind": "sgd", "lr": 0.1, "groups": [{"pattern": "a.*", "lr_mult": 0.5}]}),
    ("sgd_nesterov_wd", {"kind": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01,
                         "groups": [{"pattern": "a.*", "lr_mult": 2.0, "weight_decay": 0.1}]}),
    ("sgd_dampening_clips", {"kind": "sgd", "lr": 0.1, "momentum": 0.8, "dampening": 0.3,
                             "groups": [{"pattern": "a.*", "transforms": [{"clip_value": 0.5}, {"scale": 2.0}]},
                                        {"pattern": "b.*", "lr_mult": 0.3, "transforms": [{"clip_norm": 0.8}]}]}),
    ("sgd_step_schedule", {"kind": "sgd", "lr": 0.1, "momentum": 0.5,
                           "schedule": {"kind": "step", "step_size": 2, "gamma": 0.5},
                           "groups": [{"pattern": "b.*", "lr_mult": 3.0}]}),
    ("adam", {"kind": "adam", "lr": 0.01, "groups": [{"pattern": "a.*", "lr_mult": 0.1}]}),
    ("adam_wd_betas", {"kind": "adam", "lr": 0.01, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.1,
                       "groups": [{"pattern": "b.*", "lr_mult": 4.0, "weight_decay": 0.0}]}),
    ("adam_cosine_global_clip", {"kind": "adam", "lr": 0.02, "global_clip_norm": 1.0,
                                 "schedule": {"kind": "cosine", "total_steps": 4},
                                 "groups": [{"pattern": "a.*", "lr_mult": 0.5,
                                             "transforms": [{"clip_group_norm": 0.7}]}]}),
    ("adamw", {"kind": "adamw", "lr": 0.01, "groups": [{"pattern": "a.*", "lr_mult": 0.5, "weight_decay": 0.2}]}),
    ("adamw_warmup", {"kind": "adamw", "lr": 0.05, "weight_decay": 0.05,
                      "schedule": {"kind": "warmup", "warmup_steps": 3}}),
    ("adamax", {"kind": "adamax", "lr": 0.002, "groups": [{"pattern": "a.*", "lr_mult": 5.0}]}),
    ("adamax_wd", {"kind": "adamax", "lr": 0.01, "betas": [0.7, 0.9], "weight_decay": 0.05,
                   "groups": [{"pattern": "b.*", "lr_mult": 0.2}]}),
    ("rmsprop", {"kind": "rmsprop", "lr": 0.01, "groups": [{"pattern": "a.*", "lr_mult": 0.5}]}),
    ("rmsprop_centered_momentum", {"kind": "rmsprop", "lr": 0.01, "alpha": 0.9, "momentum": 0.5,
                                   "centered": True, "weight_decay": 0.01,
                                   "groups": [{"pattern": "b.*", "lr_mult": 2.0}]}),
]


def make_optimizer(cfg, params):
    kind, lr = cfg["kind"], cfg["lr"]
    default_wd = cfg.get("weight_decay", 1e-2 if kind == "adamw" else 0.0)
    groups = [dict(g, params=[]) for g in cfg.get("groups", [])] + [{"pattern": None, "params": []}]
    for name, p in params.items():  # first match wins, the rest form the default group
        next(g for g in groups if g["pattern"] is None or fnmatch.fnmatchcase(name, g["pattern"]))["params"].append(p)
    torch_groups = [{"params": g["params"], "lr": lr * g.get("lr_mult", 1.0),
                     "weight_decay": g.get("weight_decay", default_wd)} for g in groups if g["params"]]
    betas = tuple(cfg.get("betas", (0.9, 0.999)))
    eps = cfg.get("eps", 1e-8)
    if kind == "sgd":
        opt = torch.optim.SGD(torch_groups, lr=lr, momentum=cfg.get("momentum", 0.0),
                              dampening=cfg.get("dampening", 0.0), nesterov=cfg.get("nesterov", False), foreach=False)
    elif kind in ("adam", "adamw"):
        cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
        opt = cls(torch_groups, lr=lr, betas=betas, eps=eps, foreach=False)
    elif kind == "adamax":
        opt = torch.optim.Adamax(torch_groups, lr=lr, betas=betas, eps=eps, foreach=False)
    elif kind == "rmsprop":
        opt = torch.optim.RMSprop(torch_groups, lr=lr, alpha=cfg.get("alpha", 0.99), eps=eps,
                                  momentum=cfg.get("momentum", 0.0), centered=cfg.get("centered", False),
                                  foreach=False)
    else:
        raise ValueError(kind)
    return opt, [g for g in groups if g["params"]]


def make_scheduler(cfg, opt):
    sched = cfg.get("schedule", {"kind": "constant"})
    if sched["kind"] == "constant":
        return None
    if sched["kind"] == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=sched["step_size"], gamma=sched.get("gamma", 0.1))
    if sched["kind"] == "cosine":
        assert sched.get("warmup_steps", 0) == 0 and sched.get("final_mult", 0.0) == 0.0
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=sched["total_steps"])
    if sched["kind"] == "warmup":
        w = sched["warmup_steps"]
        return torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0 / w, end_factor=1.0, total_iters=w - 1)
    raise ValueError(sched)


def transform(groups, global_clip):
    for g in groups:
        for t in g.get("transforms", []):
            (key, value), = t.items()
            if key == "clip_value":
                torch.nn.utils.clip_grad_value_(g["params"], value)
            elif key == "clip_norm":
                for p in g["params"]:
                    torch.nn.utils.clip_grad_norm_([p], value)
            elif key == "clip_group_norm":
                torch.nn.utils.clip_grad_norm_(g["params"], value)
            elif key == "scale":
                for p in g["params"]:
                    p.grad.mul_(value)
            else:
                raise ValueError(key)
    if global_clip is not None:
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], global_clip)


def main():
    torch.manual_seed(20190310)
    init = {n: torch.randn(s, dtype=torch.float64) for n, s in SHAPES.items()}
    grads = [{n: torch.randn(s, dtype=torch.float64) for n, s in SHAPES.items()} for _ in range(STEPS)]
    cases = []
    for name, cfg in CASES:
        params = {n: t.clone().requires_grad_(True) for n, t in init.items()}
        opt, groups = make_optimizer(cfg, params)
        scheduler = make_scheduler(cfg, opt)
        trajectory = []
        for step_grads in grads:
            for n, p in params.items():
                p.grad = step_grads[n].clone()
            transform(groups, cfg.get("global_clip_norm"))
            opt.step()
            if scheduler is not None:
                scheduler.step()
            trajectory.append({n: p.detach().flatten().tolist() for n, p in params.items()})
        assert all(math.isfinite(x) for step in trajectory for v in step.values() for x in v)
        cases.append({"name": name, "optim": cfg, "params": trajectory})
    fixture = {
        "produced_by": "benches/pytorch/optim_reference.py",
        "torch": torch.__version__,
        "shapes": SHAPES,
        "init": {n: t.flatten().tolist() for n, t in init.items()},
        "grads": [{n: t.flatten().tolist() for n, t in g.items()} for g in grads],
        "cases": cases,
    }
    with open(OUT, "w") as f:
        json.dump(fixture, f, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases of {STEPS} steps to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
