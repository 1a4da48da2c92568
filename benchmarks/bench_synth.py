"""Synthetic cohort generation speed: wall time per size preset and worker count, images per second.

Prints figures only (the machine may be shared: rerun on a quiet one for real numbers).
    python benchmarks/bench_synth.py [--sizes tiny,small] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from pipeline.synth import generate_cohort
from pipeline.workspace import Workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    for size in args.sizes.split(","):
        for workers in (int(w) for w in args.workers.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                ws = Workspace(Path(tmp) / "ws")
                started, cpu = time.perf_counter(), time.process_time()
                manifests = generate_cohort(ws, size=size, workers=workers, progress=False)
                wall = time.perf_counter() - started
                images = sum(len(pd.read_parquet(p, columns=["image_id"])) for p in manifests.values())
                print(
                    f"size={size:6s} workers={workers}  images={images:6d}  wall={wall:6.1f} s  "
                    f"{images / wall:7.0f} images/s  (main-process cpu {time.process_time() - cpu:.1f} s)"
                )


if __name__ == "__main__":
    main()
