"""Benchmark: false-positive rate and power of the paired permutation test when two models' scores differ in
scale or shape (two backbones), ranked (chex) vs raw-score swapping, next to DeLong's test.

Each simulated test set has n images (30% positive); both models see one latent signal with their own noise,
model A's signal is stronger by `effect` (0 under the null); model B's scores then pass through a monotone
transform: none, a different scale (10 b + 5) or a different shape (exp(2 b)). Order-based metrics (AUROC)
are unchanged by the transform, so the null holds exactly and a valid test rejects at alpha = 0.05. The
simulated sets are the columns of one call (independent outputs), so the whole study is a few vectorised calls.

    python benchmarks/bench_permutation_null.py [--sets 2000] [--n 120] [--permutations 199] [--effect 0.6]

Prints rejection rates with their Monte-Carlo standard error; asserts nothing. The test suite runs a smaller
version (tests/pipeline/stats/test_defects_issue14.py).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pipeline.stats.delong import delong_test
from pipeline.stats.permutation import paired_permutation_test

TRANSFORMS = {
    "same scale": lambda b: b,
    "different scale": lambda b: 10.0 * b + 5.0,
    "different shape": lambda b: np.exp(2.0 * b),
}


def simulate(rng: np.random.Generator, n_sets: int, n: int, effect: float, transform):
    y = (rng.random((n, n_sets)) < 0.3).astype(float)
    shared = rng.normal(size=(n, n_sets))
    a = y * (1.0 + effect) + 0.7 * shared + rng.normal(size=(n, n_sets))
    b = y * 1.0 + 0.7 * shared + rng.normal(size=(n, n_sets))
    return y, a, transform(b)


def rates(y, a, b, n_permutations: int) -> dict[str, float]:
    out = {}
    for name, rank in (("ranked (chex)", True), ("raw swap", False)):
        table = paired_permutation_test(y, a, b, n_permutations=n_permutations, seed=1, metrics=("auroc",), rank=rank)
        out[name] = float(np.mean(table.loc[table["output"] != "macro", "p_value"].to_numpy() <= 0.05))
    delong = np.array([delong_test(y[:, k], a[:, k], b[:, k]).p_value for k in range(y.shape[1])])
    out["DeLong"] = float(np.mean(delong <= 0.05))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", type=int, default=2000, help="simulated test sets per case")
    parser.add_argument("--n", type=int, default=120, help="images per test set")
    parser.add_argument("--permutations", type=int, default=199)
    parser.add_argument("--effect", type=float, default=0.6, help="A's extra signal for the power rows")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    se_null = np.sqrt(0.05 * 0.95 / args.sets)
    print(f"{args.sets} test sets of {args.n} images per case, {args.permutations} permutations, alpha 0.05")
    print(f"null rows: a valid test gives 0.050 (Monte-Carlo SE {se_null:.3f}); power rows: effect {args.effect}")
    print(f"{'case':<18} {'quantity':<6} {'ranked (chex)':>14} {'raw swap':>9} {'DeLong':>7}")
    start = time.perf_counter()
    for case, transform in TRANSFORMS.items():
        for quantity, effect in (("null", 0.0), ("power", args.effect)):
            r = rates(*simulate(rng, args.sets, args.n, effect, transform), args.permutations)
            print(f"{case:<18} {quantity:<6} {r['ranked (chex)']:>14.3f} {r['raw swap']:>9.3f} {r['DeLong']:>7.3f}")
    print(f"total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
