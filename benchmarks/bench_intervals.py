"""Benchmark: do the printed intervals hold their level on small test sets, and does DeLong on clustered data?

1. Coverage of the 95% AUROC interval at true AUROC 0.75 (binormal scores), single finding: n = 200, 40 and 13
   images at prevalence 0.25 (about 50, 10 and 3 positives), and n = 40 or 13 with a fixed number of positives.
   'before' is what chex printed until issue 25: a percentile bootstrap interval whatever the counts (a zero-width
   one on a perfect separation included). 'after' is the rule `pipeline.stats.evaluate_predictions` applies now:
   the same interval, but none (with the reason) below MIN_CI_CLASS_UNITS positive or negative test units or when
   it has zero width; coverage is then over the intervals printed, and 'printed' says how often one was. BCa and
   a class-stratified bootstrap are printed beside it: the simulation this rule was chosen by.
2. Rejection rate at 0.05 of DeLong's test under the null with 50 patients x 4 images whose model errors are
   shared within a patient: plain DeLong (images independent, 'before') vs Obuchowski's clustered DeLong ('after').

    python benchmarks/bench_intervals.py [--reps 300] [--resamples 400]

A few minutes on 2 cores; asserts nothing. Monte Carlo SE of a coverage near 0.95 with 300 reps: 0.013.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import norm

from pipeline.stats.bootstrap import bootstrap_metrics
from pipeline.stats.classification import MIN_CI_CLASS_UNITS
from pipeline.stats.delong import delong_test

TRUE_AUROC = 0.75
SHIFT = np.sqrt(2) * norm.ppf(TRUE_AUROC)  # binormal, unit variances: AUROC = Phi(shift / sqrt 2)
METHODS = {"percentile": {}, "bca": {"ci_method": "bca"}, "stratified": {"stratified": True}}


def coverage(rng, n: int, prevalence: float | None, n_pos: int | None, reps: int, resamples: int) -> dict:
    """Share of intervals holding TRUE_AUROC per method, and for the 'after' rule the share printed."""
    hits = dict.fromkeys(METHODS, 0)
    printed = after_hits = zero_width = 0
    positives = []
    for rep in range(reps):
        if n_pos is None:
            y = (rng.random(n) < prevalence).astype(float)
            while not 0 < y.sum() < n:
                y = (rng.random(n) < prevalence).astype(float)
        else:
            y = np.r_[np.ones(n_pos), np.zeros(n - n_pos)]
        s = rng.normal(size=n) + SHIFT * y
        positives.append(y.sum())
        for name, options in METHODS.items():
            b = bootstrap_metrics(y, s, n_resamples=resamples, seed=rep, **options)
            low, high = b.ci_low["auroc"][0], b.ci_high["auroc"][0]
            covered = low <= TRUE_AUROC <= high
            hits[name] += covered
            if name == "percentile":
                zero_width += low == high
                if min(y.sum(), n - y.sum()) >= MIN_CI_CLASS_UNITS and low < high:
                    printed += 1
                    after_hits += covered
    return {
        "positives": float(np.mean(positives)),
        **{k: v / reps for k, v in hits.items()},
        "zero_width": zero_width,
        "after": after_hits / printed if printed else float("nan"),
        "printed": printed / reps,
    }


def clustered_null(rng, n_patients: int = 50, per_patient: int = 4):
    """Two exchangeable models; each model's error is shared by a patient's images (so images are not independent)."""
    y = np.repeat(rng.random(n_patients) < 0.4, per_patient).astype(float)
    clusters = np.repeat(np.arange(n_patients), per_patient)
    latent = np.repeat(rng.normal(size=n_patients), per_patient) + y
    a = latent + np.repeat(rng.normal(size=n_patients), per_patient) + 0.3 * rng.normal(size=len(y))
    b = latent + np.repeat(rng.normal(size=n_patients), per_patient) + 0.3 * rng.normal(size=len(y))
    return y, a, b, clusters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=300)
    parser.add_argument("--resamples", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)

    print(f"1. coverage of 95% AUROC intervals, true AUROC {TRUE_AUROC}, {args.reps} reps x {args.resamples} resamples")
    print(f"   'after': no interval below {MIN_CI_CLASS_UNITS} positives or negatives or at zero width")
    header = f"{'case':<26}{'pos':>6}{'before':>8}{'bca':>7}{'strat':>7}{'0-width':>9}{'after':>8}{'printed':>9}"
    print(header)
    cases = [(200, 0.25, None), (40, 0.25, None), (13, 0.25, None), (40, None, 3), (40, None, 5), (40, None, 8)]
    cases += [(13, None, 3)]
    for n, prevalence, n_pos in cases:
        t0 = time.perf_counter()
        c = coverage(rng, n, prevalence, n_pos, args.reps, args.resamples)
        name = f"n={n}, " + (f"prevalence {prevalence}" if n_pos is None else f"{n_pos} positives")
        print(
            f"{name:<26}{c['positives']:>6.1f}{c['percentile']:>8.3f}{c['bca']:>7.3f}{c['stratified']:>7.3f}"
            f"{c['zero_width']:>9d}{c['after']:>8.3f}{c['printed']:>9.2f}   ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )

    print("\n2. DeLong under the null, 50 patients x 4 images, errors shared within a patient")
    reject = {"plain (before)": 0, "clustered (after)": 0}
    n_sims = 4 * args.reps
    for _ in range(n_sims):
        y, a, b, clusters = clustered_null(rng)
        reject["plain (before)"] += delong_test(y, a, b).p_value < 0.05
        reject["clustered (after)"] += delong_test(y, a, b, clusters=clusters).p_value < 0.05
    for name, count in reject.items():
        print(f"   {name:<20} rejects {count / n_sims:.3f} at 0.05 ({n_sims} null data sets)")


if __name__ == "__main__":
    main()
