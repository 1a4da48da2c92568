"""Paired permutation test: are two models' AUROC/AUPRC on the same test images different?

Under the null the two models are exchangeable on every image (or every patient), so a permutation swaps
the two scores of each swapped unit. Two backbones' scores live on different scales and shapes, and raw
scores are not exchangeable then (the test turns conservative and loses power), so each model's scores are
first replaced by their ranks per output (over the labelled images, divided by their number): AUROC and
AUPRC depend on the order only and do not change. Pool each output's 2n ranks once and sort them into levels
(pipeline.stats.metrics): a permuted model A' is the pooled set weighted 1 on the scores it takes (A's on
unswapped units, B's on swapped ones) and 0 elsewhere, and B' is the complement. So each permutation is one
weight column of a sparse product, as a bootstrap resample is, and 1,000 permutations need no re-sorting.

Two-sided p-value: the share of permutations with |diff| >= |observed diff|, with the +1 correction of
Phipson & Smyth (2010) so p is never 0 (p = (1 + hits) / (1 + n_permutations)); with 2**units <= n_permutations
every swap pattern is enumerated and p is exact (no +1), as scipy.stats.permutation_test does. With few units p
cannot be small: the observed pattern and its mirror (every unit swapped) always count, so an exact p is at least
2 / 2**units (0.125 with 4 patients); a sampled p is at least 1 / (1 + n_permutations). Each row carries that
smallest attainable p (`min_p`) and the number of units, so a table can say what p could have been.
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.stats.bootstrap import _chunk_size, _units_of, _with_macro
from pipeline.stats.metrics import ScoreLevels, binary_labels, build_levels

PERMUTATION_METRICS = ("auroc", "auprc")
MACRO = "macro"
MAX_WORKERS = 4
# Permutations per sparse product: the level matrix is read once for all of them (at CXR-LT 24's size 1.5 ms
# per permutation with 20 columns against 3.6 ms with the 5 that the metrics' memory budget allows).
PRODUCT_COLUMNS = 20


def paired_permutation_test(
    labels: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    groups: np.ndarray | None = None,
    n_permutations: int = 1000,
    seed: int = 0,
    metrics: tuple[str, ...] = PERMUTATION_METRICS,
    outputs: list[str] | None = None,
    chunk_size: int | None = None,
    rank: bool = True,
    workers: int | None = None,
) -> pd.DataFrame:
    """Two-sided paired permutation test of model A vs model B, per output and for the macro average.

    labels, scores_a, scores_b: (n, K) on the same images (NaN labels left out per output); groups: (n,) unit
    whose two scores swap together (patient id), None swaps per image. Returns one row per output and metric
    plus output='macro' rows: output, metric, estimate_a, estimate_b, diff, p_value, n_permutations (the
    permutations drawn, or all 2**units swap patterns when `exact`), exact, n_units, min_p (the smallest p
    attainable), n, n_pos. The macro averages the outputs with positives and negatives (the same for both
    models). `rank=False` swaps raw scores, valid only when both models share one score scale
    (benchmarks/bench_permutation_null.py shows what goes wrong otherwise). `workers`: threads that score chunks
    of permutations side by side (default: the CPU count, at most MAX_WORKERS); the p-values do not depend on it.
    """
    unknown = set(metrics) - set(PERMUTATION_METRICS)
    if unknown:
        raise ValueError(f"paired_permutation_test supports {PERMUTATION_METRICS}, not {sorted(unknown)}")
    labels = binary_labels(labels)
    scores_a, scores_b = (np.asarray(x, dtype=np.float64) for x in (scores_a, scores_b))
    scores_a, scores_b = (x[:, None] if x.ndim == 1 else x for x in (scores_a, scores_b))
    if not labels.shape == scores_a.shape == scores_b.shape:
        raise ValueError(f"shapes differ: labels {labels.shape}, A {scores_a.shape}, B {scores_b.shape}")
    if rank:
        scores_a, scores_b = rank_scores(labels, scores_a), rank_scores(labels, scores_b)
    n_outputs = labels.shape[1]
    outputs = [str(k) for k in range(n_outputs)] if outputs is None else list(outputs)
    units, n_units = _units_of(groups, len(labels))
    # Pooled scores: rows of A are units 0..n_units-1, rows of B are units n_units..2*n_units-1.
    levels = build_levels(
        np.vstack([labels, labels]),
        np.vstack([scores_a, scores_b]),
        units=np.r_[units, units + n_units],
        n_units=2 * n_units,
    )
    total = levels.sums(np.ones(2 * n_units))
    total_row = total.T.astype(np.float64)
    observed_a = levels.metrics_from_sums(levels.sums(np.r_[np.ones(n_units), np.zeros(n_units)]))
    observed_b = levels.metrics_from_sums(total - levels.sums(np.r_[np.ones(n_units), np.zeros(n_units)]))
    defined = ~np.isnan(observed_a["auroc"][:, 0])
    est_a = {m: _with_macro(observed_a[m].T, defined)[0] for m in metrics}
    est_b = {m: _with_macro(observed_b[m].T, defined)[0] for m in metrics}
    observed = {m: est_a[m] - est_b[m] for m in metrics}

    exact = n_units < 63 and 2**n_units <= n_permutations
    hits = {m: np.zeros(n_outputs + 1) for m in metrics}
    count = 0
    n_workers = max(1, min(workers or available_cpus(), MAX_WORKERS))
    chunk = chunk_size or max(1, _chunk_size(levels, 2 * n_units) // n_workers)  # the memory budget, shared
    draws = chunk_size or max(chunk, PRODUCT_COLUMNS)

    def tally(swaps: np.ndarray) -> dict[str, np.ndarray]:
        """Hits of one chunk of swap patterns (numpy and scipy.sparse release the GIL: chunks run side by side):
        one sparse product for the chunk, then the metrics `chunk` columns at a time."""
        weights = np.concatenate([~swaps, swaps], axis=1).T.astype(levels.dtype)
        sums = levels.sums(weights)
        out = {m: np.zeros(n_outputs + 1) for m in metrics}
        for start in range(0, len(swaps), chunk):
            block_a = sums[:, start : start + chunk].T.astype(np.float64, order="C")
            perm_a = ranking_metrics(levels, block_a)
            perm_b = ranking_metrics(levels, total_row - block_a)
            for m in metrics:
                diff = _with_macro(perm_a[m].T, defined) - _with_macro(perm_b[m].T, defined)
                tolerance = 100 * np.finfo(np.float64).eps * np.abs(observed[m])
                out[m] += (np.abs(diff) >= np.abs(observed[m]) - tolerance).sum(axis=0)
        return out

    # The swap patterns are drawn in order from one generator; hits are integer counts, so the p-values do not
    # depend on how many workers run or in which order chunks finish.
    with ThreadPoolExecutor(n_workers) as pool:
        pending: list = []
        for swaps in _swap_patterns(n_units, n_permutations, seed, exact, draws):
            pending.append(pool.submit(tally, swaps))
            count += len(swaps)
            if len(pending) >= 2 * n_workers:
                for m, h in pending.pop(0).result().items():
                    hits[m] += h
        for future in pending:
            for m, h in future.result().items():
                hits[m] += h

    n_pos = np.r_[observed_a["n_pos"][:, 0], observed_a["n_pos"][defined, 0].sum()]
    n_all = n_pos + np.r_[observed_a["n_neg"][:, 0], observed_a["n_neg"][defined, 0].sum()]
    min_p = smallest_p(n_units, count, exact)
    rows = []
    for m in metrics:
        p_values = hits[m] / count if exact else (1 + hits[m]) / (1 + count)
        for j, name in enumerate([*outputs, MACRO]):
            is_defined = bool(defined[j]) if j < n_outputs else bool(defined.any())
            rows.append(
                {
                    "output": name,
                    "metric": m,
                    "estimate_a": est_a[m][j],
                    "estimate_b": est_b[m][j],
                    "diff": observed[m][j],
                    "p_value": p_values[j] if is_defined else np.nan,
                    "n_permutations": count,
                    "exact": exact,
                    "n_units": n_units,
                    "min_p": min_p,
                    "n": int(n_all[j]),
                    "n_pos": int(n_pos[j]),
                }
            )
    return pd.DataFrame(rows)


def ranking_metrics(levels: ScoreLevels, block: np.ndarray) -> dict[str, np.ndarray]:
    """AUROC and AUPRC (K, B) of each weight column from level sums laid out (B, rows) in float64, with
    `levels.metrics_from_sums`' formulas and summation order (the same values), but only these two: the
    permutation test's inner loop, where model B's block is the total minus A's (no second transpose)."""
    n_levels, offsets = levels.n_levels, levels.offsets
    p = block[:, :n_levels]
    t = block[:, 2 * n_levels : 3 * n_levels]
    f = block[:, n_levels : 2 * n_levels] + t if levels.has_ties else block[:, n_levels : 2 * n_levels]
    z = block[:, 3 * n_levels : 3 * n_levels + levels.n_outputs]
    lengths = np.diff(offsets)
    nonempty = lengths > 0
    starts = offsets[:-1][nonempty]
    ends = offsets[1:][nonempty] - 1
    n_cols = block.shape[0]
    tp = np.cumsum(p, axis=1)
    fp = np.cumsum(f, axis=1)
    base_tp = np.zeros((n_cols, len(lengths)))
    base_fp = np.zeros((n_cols, len(lengths)))
    inner = starts > 0
    where = np.flatnonzero(nonempty)
    base_tp[:, where[inner]] = tp[:, starts[inner] - 1]
    base_fp[:, where[inner]] = fp[:, starts[inner] - 1]
    pos_total = np.zeros((n_cols, len(lengths)))
    pos_total[:, nonempty] = tp[:, ends] - base_tp[:, nonempty]
    neg_total = np.zeros((n_cols, len(lengths)))
    neg_total[:, nonempty] = fp[:, ends] - base_fp[:, nonempty]
    neg_total += z
    tp -= np.repeat(base_tp, lengths, axis=1)
    fp -= np.repeat(base_fp, lengths, axis=1)
    below = fp - 0.5 * t if levels.has_ties else fp
    with np.errstate(divide="ignore", invalid="ignore"):
        u_stat = pos_total * neg_total - _segment_sum(p * below, starts, nonempty, n_cols)
        auroc = u_stat / (pos_total * neg_total)
        precision_mass = np.divide(p * tp, tp + fp, out=np.zeros_like(tp), where=p > 0)
        auprc = _segment_sum(precision_mass, starts, nonempty, n_cols) / pos_total
    undefined = (pos_total == 0) | (neg_total == 0)
    return {"auroc": np.where(undefined, np.nan, auroc).T, "auprc": np.where(undefined, np.nan, auprc).T}


def _segment_sum(values: np.ndarray, starts: np.ndarray, nonempty: np.ndarray, n_cols: int) -> np.ndarray:
    out = np.zeros((n_cols, len(nonempty)))
    if nonempty.any():
        out[:, nonempty] = np.add.reduceat(values, starts, axis=1)
    return out


def available_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS says, else the CPU count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def smallest_p(n_units: int, n_permutations: int, exact: bool) -> float:
    """The smallest p-value the test can give: 2 / 2**units when every swap pattern is enumerated (a pattern and
    its mirror always tie with the observed difference), else 1 / (1 + n_permutations)."""
    return 2.0 / n_permutations if exact else 1.0 / (1 + n_permutations)


def rank_scores(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Each output's scores as mid-ranks over its labelled rows divided by their number (NaN elsewhere): one
    scale for every model, the same order and ties, so AUROC and AUPRC are unchanged."""
    ranked = np.full(scores.shape, np.nan)
    for k in range(scores.shape[1]):
        keep = ~np.isnan(labels[:, k])
        if keep.any():
            ranked[keep, k] = stats.rankdata(scores[keep, k]) / keep.sum()
    return ranked


def _swap_patterns(n_units: int, n_permutations: int, seed: int, exact: bool, chunk: int):
    """Yield (B, n_units) bool arrays: which units swap their two scores in each permutation."""
    if exact:
        patterns = np.array(list(itertools.product([False, True], repeat=n_units)), dtype=bool).reshape(-1, n_units)
        for start in range(0, len(patterns), chunk):
            yield patterns[start : start + chunk]
        return
    rng = np.random.default_rng(seed)
    for start in range(0, n_permutations, chunk):
        yield rng.random((min(chunk, n_permutations - start), n_units)) < 0.5
