"""Benchmark: bootstrap CIs and a paired permutation test at CXR-LT 24's test size, chex vs a sklearn loop.

Case: 51,775 test images x 40 findings (long-tailed prevalences 30% .. 0.1%), ~2 images per patient, 1,000
resamples (cluster bootstrap by patient) of every metric, and one paired permutation test (1,000 permutations
per patient) of two models. The reference is the plain per-resample loop (sklearn roc_auc_score +
average_precision_score per finding) on the *same* resample indices; it takes ~20 minutes for 1,000
resamples, so by default a few resamples are timed and extrapolated (said so in the output), and their
replicates are compared with chex's. `--loop-resamples 1000` runs it in full (then the CI difference is exact).

    python benchmarks/bench_stats.py [--loop-resamples 5] [--resamples 1000] [--workers N]

Prints figures and ratios; asserts nothing. Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from pipeline.stats.bootstrap import bootstrap_metrics, resample_indices
from pipeline.stats.permutation import MAX_WORKERS, available_cpus, paired_permutation_test, rank_scores

N_IMAGES, N_FINDINGS = 51_775, 40


def synthetic_case(seed: int = 0):
    rng = np.random.default_rng(seed)
    prevalence = np.geomspace(0.3, 0.001, N_FINDINGS)
    labels = (rng.random((N_IMAGES, N_FINDINGS)) < prevalence).astype(np.float64)
    logits = rng.normal(size=(N_IMAGES, N_FINDINGS)) + 1.5 * labels - 2.0
    scores_a = (1 / (1 + np.exp(-logits))).astype(np.float32).astype(np.float64)  # float32 scores: some ties
    scores_b = (1 / (1 + np.exp(-(logits + rng.normal(0, 0.7, logits.shape))))).astype(np.float32).astype(np.float64)
    patients = np.sort(rng.integers(0, N_IMAGES // 2, N_IMAGES))
    return labels, scores_a, scores_b, patients


def loop_bootstrap(labels, scores, rows_of, indices):
    """The naive way: per resample, gather the rows and call sklearn per finding."""
    auroc, auprc = [], []
    for draw in indices:
        rows = np.concatenate([rows_of[u] for u in draw])
        y, s = labels[rows], scores[rows]
        auroc.append([roc_auc_score(y[:, k], s[:, k]) for k in range(N_FINDINGS)])
        auprc.append([average_precision_score(y[:, k], s[:, k]) for k in range(N_FINDINGS)])
    return np.array(auroc), np.array(auprc)


def loop_permutations(labels, scores_a, scores_b, units, swaps):
    """The naive way: per permutation, swap (ranked) scores per patient and call sklearn per finding for both."""
    diffs = []
    for swap in swaps:
        flip = swap[units][:, None]
        a, b = np.where(flip, scores_b, scores_a), np.where(flip, scores_a, scores_b)
        diffs.append(
            np.mean(
                [roc_auc_score(labels[:, k], a[:, k]) - roc_auc_score(labels[:, k], b[:, k]) for k in range(N_FINDINGS)]
            )
        )
    return np.array(diffs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--loop-resamples", type=int, default=5, help="resamples of the sklearn loop to time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="permutation test threads (default: the CPUs)")
    args = parser.parse_args()

    labels, scores_a, scores_b, patients = synthetic_case(args.seed)
    units = np.unique(patients, return_inverse=True)[1]
    n_units = int(units.max()) + 1
    print(
        f"case: {N_IMAGES} images x {N_FINDINGS} findings, {n_units} patients, "
        f"{int(labels.sum())} positives; {args.resamples} resamples"
    )

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    result = bootstrap_metrics(labels, scores_a, clusters=patients, n_resamples=args.resamples, seed=args.seed)
    chex_seconds = time.perf_counter() - start
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"chex bootstrap (all 6 metrics, per finding + macro): {chex_seconds:.2f} s; "
        f"peak RSS {rss_after:.0f} MiB (was {rss_before:.0f} MiB before)"
    )

    n_loop = min(args.loop_resamples, args.resamples)
    indices = np.concatenate(list(resample_indices(n_units, n_loop, seed=args.seed, chunk_size=n_loop)))
    rows_of = np.split(np.argsort(units, kind="stable"), np.cumsum(np.bincount(units))[:-1])
    start = time.perf_counter()
    loop_auroc, loop_auprc = loop_bootstrap(labels, scores_a, rows_of, indices)
    loop_seconds = time.perf_counter() - start
    loop_total = loop_seconds * args.resamples / n_loop
    label = (
        "measured" if n_loop == args.resamples else f"measured on {n_loop}, extrapolated x{args.resamples / n_loop:g}"
    )
    print(
        f"sklearn loop (AUROC + AUPRC only): {loop_seconds:.2f} s for {n_loop} resamples -> "
        f"{loop_total:.0f} s for {args.resamples} ({label})"
    )
    print(f"speed-up: {loop_total / chex_seconds:.0f}x")
    diff = max(
        np.abs(result.replicates["auroc"][:n_loop, :N_FINDINGS] - loop_auroc).max(),
        np.abs(result.replicates["auprc"][:n_loop, :N_FINDINGS] - loop_auprc).max(),
    )
    print(f"max |chex - loop| over the {n_loop} shared resamples x {N_FINDINGS} findings x AUROC/AUPRC: {diff:.2e}")
    if n_loop == args.resamples:
        ci_diff = max(
            np.abs(np.percentile(values, q, axis=0) - bound[:N_FINDINGS]).max()
            for values, metric in ((loop_auroc, "auroc"), (loop_auprc, "auprc"))
            for q, bound in ((2.5, result.ci_low[metric]), (97.5, result.ci_high[metric]))
        )
        print(f"max CI bound difference chex vs loop: {ci_diff:.2e}")
    else:
        print(
            "CI bounds are percentiles of the replicates, so equal replicates give equal CIs "
            "(run with --loop-resamples equal to --resamples to compare the bounds themselves)"
        )
    other = bootstrap_metrics(labels, scores_a, clusters=patients, n_resamples=args.resamples, seed=args.seed + 1)
    mc = max(np.abs(other.ci_low[m] - result.ci_low[m]).max() for m in ("auroc", "auprc"))
    print(f"for scale: max CI bound change between two seeds (Monte-Carlo error): {mc:.4f}")
    print(
        f"macro AUROC {result.estimates['auroc'][-1]:.4f} "
        f"({result.ci_low['auroc'][-1]:.4f}-{result.ci_high['auroc'][-1]:.4f})"
    )

    start = time.perf_counter()
    test = paired_permutation_test(
        labels, scores_a, scores_b, groups=patients, n_permutations=args.resamples, seed=args.seed, workers=args.workers
    )
    perm_seconds = time.perf_counter() - start
    swaps = np.random.default_rng(args.seed).random((n_loop, n_units)) < 0.5
    start = time.perf_counter()
    loop_permutations(labels, rank_scores(labels, scores_a), rank_scores(labels, scores_b), units, swaps)
    perm_loop_seconds = (time.perf_counter() - start) * args.resamples / n_loop
    macro = test[(test["output"] == "macro") & (test["metric"] == "auroc")].iloc[0]
    print(
        f"chex paired permutation test ({args.resamples} permutations, AUROC + AUPRC, "
        f"{min(args.workers or available_cpus(), MAX_WORKERS)} worker threads): {perm_seconds:.2f} s; "
        f"macro AUROC diff {macro['diff']:+.4f}, p = {macro['p_value']:.4g}"
    )
    print(
        f"sklearn permutation loop (AUROC only): {perm_loop_seconds:.0f} s extrapolated from {n_loop} "
        f"permutations; speed-up {perm_loop_seconds / perm_seconds:.0f}x"
    )


if __name__ == "__main__":
    main()
