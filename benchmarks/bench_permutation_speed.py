"""Benchmark: the paired permutation test now vs at an earlier revision, side by side in one process.

bench_stats.py's case (CXR-LT 24's test size: 51,775 images x 40 findings, ~2 images per patient, 1,000
permutations per patient, AUROC + AUPRC). The old implementation is read from git (`--old-rev`: its
pipeline/stats/permutation.py and metrics.py, loaded as modules beside the current ones), and the two run
alternately (old, new, new, old, ...) on the same inputs, one worker thread each, so a shared machine's load
falls on both alike; the ratio of their best CPU times is the figure to quote (wall time too). The result tables
must be equal in every cell (p-values included): the script exits 1 otherwise.

    PYTHONPATH=. python benchmarks/bench_permutation_speed.py [--old-rev 772a269] [--permutations 1000] [--reps 2]

Figures, 2026-12-02, 2 cores shared with ~6 engineers (load 11), one worker thread, old = 772a269:
  old: best CPU 12.11 s (wall 41.3 s); new: best CPU 4.72 s (wall 14.4 s); ratio 2.56 CPU, 2.86 wall;
  tables identical. Issue 25 measured the old one at 16.9 s on a quiet machine: 16.9 / 2.56 = ~6.6 s.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_stats import synthetic_case  # noqa: E402

from pipeline.stats import permutation as new_permutation  # noqa: E402


def load_old(rev: str, folder: Path):
    """The permutation module at `rev`, importing the metrics module of that revision (the bootstrap helpers it
    uses are unchanged)."""
    for name in ("permutation", "metrics"):
        text = subprocess.run(
            ["git", "show", f"{rev}:pipeline/stats/{name}.py"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout
        text = text.replace("from pipeline.stats.metrics import", "from old_metrics import")
        (folder / f"old_{name}.py").write_text(text)
    sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location("old_permutation", folder / "old_permutation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old-rev", default="772a269", help="git revision of the implementation to compare")
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=2, help="runs of each, alternating")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    labels, scores_a, scores_b, patients = synthetic_case(args.seed)
    with tempfile.TemporaryDirectory() as folder:
        old = load_old(args.old_rev, Path(folder))
        runs = {"old": old, "new": new_permutation}
        times: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
        tables = {}
        print(f"case: {labels.shape[0]} images x {labels.shape[1]} findings, {args.permutations} permutations, "
              f"one worker thread; old = {args.old_rev}", flush=True)  # fmt: skip
        for rep in range(args.reps):
            for name in ("old", "new") if rep % 2 == 0 else ("new", "old"):
                load = os.getloadavg()[0]
                wall, cpu = time.perf_counter(), time.process_time()
                tables[name] = runs[name].paired_permutation_test(
                    labels, scores_a, scores_b, groups=patients, n_permutations=args.permutations, seed=args.seed,
                    workers=1,
                )  # fmt: skip
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                times[name].append((wall, cpu))
                print(f"  {name}: CPU {cpu:.2f} s, wall {wall:.2f} s (load {load:.1f})", flush=True)
    best = {name: (min(w for w, _ in t), min(c for _, c in t)) for name, t in times.items()}
    same = tables["old"].equals(tables["new"])
    print(
        f"best: old CPU {best['old'][1]:.2f} s (wall {best['old'][0]:.2f} s), new CPU {best['new'][1]:.2f} s "
        f"(wall {best['new'][0]:.2f} s); ratio old / new: CPU {best['old'][1] / best['new'][1]:.2f}, wall "
        f"{best['old'][0] / best['new'][0]:.2f}; result tables (p-values included) identical: {same}"
    )
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
