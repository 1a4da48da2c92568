"""Peak memory of one stacked GLoRI training step at the ViT-L/16-512 shape, with and without micro-batching.

Each configuration runs in a fresh child process (CPU): the sweep's 9 GLoRI heads (paper width 768/2048,
14 outputs), AdamW, and one optimizer step over a batch whose tokens arrive in micro-batches, as they do
from a streamed store (`--micro-batch`). Printed: the child's peak RSS (ru_maxrss) and its RSS before the
step (the Python/torch runtime, the heads and their optimizer state), so the step's own working set is the
difference. Without micro-batching the working set grows with the batch; with it, it stays at one
micro-batch's, whatever the batch size (the figures show both), so a batch-256 step needs what a
batch-2m step with micro-batch m needs.

    python benchmarks/bench_glori_memory.py                      # full tokens (4 x 1024 x 1024 per image)
    python benchmarks/bench_glori_memory.py --rank 256 --pool 2  # a projected, pooled store's tokens
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

import numpy as np
import psutil
import torch

from heads import HeadStack, build_head
from pipeline.probe.sweep import TrainSpec, train_stack
from pipeline.store.projection import random_projection

L, D, P, K, LRS = 4, 1024, 1024, 14, 9


class Streamed:
    """Random tokens made per (micro-)batch, as a streamed store read yields them (no whole batch held)."""

    def __init__(self, rank: int, pool: int) -> None:
        self.rank, self.p = rank, P // (pool * pool)

    def batches(self, positions, batch_size, shuffle=False, seed=0, sample_views=False):
        g = torch.Generator().manual_seed(seed)
        for start in range(0, len(positions), batch_size):
            pos = np.asarray(positions[start : start + batch_size])
            shape = (len(pos), 1, self.p, self.rank) if self.rank else (len(pos), L, self.p, D)
            yield pos, {"cls": torch.randn(len(pos), L, D, generator=g), "patch": torch.randn(shape, generator=g)}


def child(batch: int, micro: int, rank: int, pool: int) -> dict:
    torch.manual_seed(0)
    # a projected store's heads hold full-width weights and fold them through the basis (heads/base.py)
    options = {"projection": random_projection(L * D, rank)} if rank else {}
    stack = HeadStack(lambda: build_head("glori", dim=D, n_layers=L, n_outputs=K, **options), LRS)
    labels = (np.random.default_rng(0).random((batch, K)) < 0.3).astype(np.float64)
    spec = TrainSpec(tuple(np.geomspace(1e-5, 5e-3, LRS)), epochs=1, batch_size=batch, micro_batch=micro)
    before = psutil.Process().memory_info().rss
    train_stack(stack, Streamed(rank, pool), np.arange(batch), labels, spec, torch.device("cpu"), progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"batch": batch, "micro": micro, "before_gb": before / 1e9, "peak_gb": peak / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--pool", type=int, default=1)
    parser.add_argument("--configs", default="4:0,8:0,8:4,16:4", help="batch:micro pairs (micro 0: whole batch)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        batch, micro = (int(x) for x in args.child.split(":"))
        print(json.dumps(child(batch, micro, args.rank, args.pool)))
        return
    shape = f"rank {args.rank}" if args.rank else "full tokens"
    print(f"GLoRI x {LRS} lrs, ViT-L/16-512 shape ({shape}, pool {args.pool}), one AdamW step on CPU; "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    rows = []
    for pair in args.configs.split(","):
        cmd = [sys.executable, __file__, "--child", pair, "--rank", str(args.rank), "--pool", str(args.pool)]
        out = subprocess.run(
            cmd, capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "2"}
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        micro = row["micro"] or "whole"
        step = row["peak_gb"] - row["before_gb"]
        print(f"  batch {row['batch']:4d}, micro-batch {micro!s:>5}: peak RSS {row['peak_gb']:.2f} GB "
              f"(before the step {row['before_gb']:.2f} GB, step working set {step:.2f} GB)")  # fmt: skip
    whole = [r for r in rows if not r["micro"]]
    if len(whole) >= 2:
        a, b = whole[0], whole[-1]
        slope = (b["peak_gb"] - a["peak_gb"]) / (b["batch"] - a["batch"])
        print(f"  without micro-batching: {slope * 1e3:.0f} MB per image of batch -> batch 256 "
              f"~{a['peak_gb'] + slope * (256 - a['batch']):.1f} GB (linear extrapolation)")  # fmt: skip


if __name__ == "__main__":
    main()
