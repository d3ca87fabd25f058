#!/usr/bin/env python3
"""All-reduce bandwidth of torch.distributed (Gloo) on N local processes: the PyTorch side of
`benches/allreduce-compare`, measured exactly as genflow's `distributed::bench::allreduce_bandwidth`.

    PYTHONPATH=$HOME/.cache/genflow/torch-2.13.0 python3 benches/pytorch/allreduce_bench.py \
        [--nproc 2] [--sizes 1,10,100] [--rounds 20] [--json out.json]

The ranks are started with torch.multiprocessing (spawn) and join with
`init_process_group("gloo", init_method="tcp://127.0.0.1:<free port>")`. For each size (MB = 10^6
bytes, an f32 tensor of zeros): 3 warm-up all-reduces (sum), then `rounds` timed ones, each after a
barrier; a round's time is the slowest rank's; the median over rounds gives
algbw = bytes / median time and busbw = algbw * 2 (n-1) / n.
"""

import argparse
import datetime
import json
import os
import socket
import statistics
import time
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

WARMUP = 3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank, world, port, sizes, rounds, json_path):
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=120))
    rows = []
    for mb in sizes:
        numel = max(1, round(mb * 1e6 / 4))
        t = torch.zeros(numel, dtype=torch.float32)
        for _ in range(WARMUP):
            dist.all_reduce(t)
        times = []
        for _ in range(rounds):
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(t)
            times.append(time.perf_counter() - start)
        gathered = [torch.zeros(rounds, dtype=torch.float64) for _ in range(world)]
        dist.all_gather(gathered, torch.tensor(times, dtype=torch.float64))
        slowest = sorted(max(g[i].item() for g in gathered) for i in range(rounds))
        median = statistics.median(slowest)
        nbytes = numel * 4
        algbw = nbytes / median / 1e9
        rows.append({"mb": mb, "bytes": nbytes, "rounds": rounds, "median_s": median,
                     "min_s": slowest[0], "algbw_gb_s": algbw,
                     "busbw_gb_s": algbw * 2 * (world - 1) / world if world > 1 else algbw})
    if rank == 0:
        print(f"torch.distributed all-reduce (Gloo, {world} ranks, f32 sum, {rounds} rounds after "
              f"{WARMUP} warm-up; MB = 10^6 bytes), torch {torch.__version__}")
        print("| size MB | median ms | min ms | algbw GB/s | busbw GB/s |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['mb']:g} | {r['median_s'] * 1e3:.2f} | {r['min_s'] * 1e3:.2f} | "
                  f"{r['algbw_gb_s']:.3f} | {r['busbw_gb_s']:.3f} |")
        if json_path:
            with open(json_path, "w") as f:
                json.dump({"impl": "pytorch", "backend": "gloo", "torch": torch.__version__,
                           "world_size": world, "threads": torch.get_num_threads(), "rows": rows}, f)
    dist.barrier()
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--sizes", default="1,10,100", help="comma-separated sizes in MB (10^6 bytes)")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--json", default=None, help="write rank 0's results here")
    a = p.parse_args()
    sizes = [float(s) for s in a.sizes.split(",")]
    mp.start_processes(worker, args=(a.nproc, free_port(), sizes, a.rounds, a.json), nprocs=a.nproc,
                       join=True, start_method="spawn")


if __name__ == "__main__":
    main()
