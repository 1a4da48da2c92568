"""Paired permutation test: are two models' AUROC/AUPRC on the same test images different?

Under the null the two models are exchangeable on every image (or every patient), so a permutation swaps
the two scores of each swapped unit. Two backbones' scores live on different scales and shapes, and raw
scores are not exchangeable then (the test turns conservative and loses power), so each model's scores are
first replaced by their ranks per output (over the labelled images, divided by their number): AUROC and
AUPRC depend on the order only and do not change. Pool each output's 2n ranks once and sort them into levels
(pipeline.stats.metrics): a permuted model A' is the pooled set weighted 1 on the scores it takes (A's on
unswapped units, B's on swapped ones) and 0 elsewhere, and B' is the complement. So each permutation is one
weight column of a sparse product, as a bootstrap resample is, and 1,000 permutations need no re-sorting.
Both permuted models' AUROC and AUPRC then come from A's level sums alone (`PairedLevels`: B's are the pooled
total's minus A's), in int64 running sums over every output at once, bit for bit the values of
`ScoreLevels.metrics_from_sums` (benchmarks/bench_permutation_speed.py times it against the loop it replaced).

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

from pipeline.stats.bootstrap import _MEMORY_BUDGET_BYTES, _units_of, _with_macro
from pipeline.stats.metrics import ScoreLevels, binary_labels, build_levels

PERMUTATION_METRICS = ("auroc", "auprc")
MACRO = "macro"
MAX_WORKERS = 4
# Permutations per sparse product: the level matrix is read once for all of them (at CXR-LT 24's size 1.5 ms
# per permutation with 20 columns against 3.6 ms with 5).
PRODUCT_COLUMNS = 20
# Level rows transposed at once: (8192 x 20) float32 blocks stay in cache.
TRANSPOSE_ROWS = 8_192
# Bytes per level and permutation of a product's chunk: its float32 sums (p, a, t rows) and three int64 copies.
_BYTES_PER_LEVEL = 3 * 4 + 3 * 8


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
    of permutations side by side (default: the CPU count, at most MAX_WORKERS); `chunk_size`: permutations per
    sparse product (default PRODUCT_COLUMNS, fewer where the memory budget asks); neither changes the p-values.
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
    pair = PairedLevels(levels, total)
    per_permutation = _BYTES_PER_LEVEL * max(levels.n_levels, 1) * n_workers
    draws = chunk_size or int(max(1, min(PRODUCT_COLUMNS, _MEMORY_BUDGET_BYTES // per_permutation)))

    def tally(swaps: np.ndarray) -> dict[str, np.ndarray]:
        """Hits of one chunk of swap patterns (numpy and scipy.sparse release the GIL: chunks run side by side):
        one sparse product for the chunk, then both permuted models' metrics (`PairedLevels`)."""
        weights = np.concatenate([~swaps, swaps], axis=1).T.astype(levels.dtype)
        perm_a, perm_b = pair.metrics(levels.sums(weights))
        out = {}
        for m in metrics:
            diff = _with_macro(perm_a[m].T, defined) - _with_macro(perm_b[m].T, defined)
            tolerance = 100 * np.finfo(np.float64).eps * np.abs(observed[m])
            out[m] = (np.abs(diff) >= np.abs(observed[m]) - tolerance).sum(axis=0)
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


class PairedLevels:
    """AUROC and AUPRC of a permuted pair (A', B') from the level sums of A' alone, one permutation at a time.

    A' holds one copy of every image (A's score or B's) and B' the other, so both have the full set's P
    positives and N negatives, and every cumulative sum of B' is the pooled total's minus A's. The values equal
    `ScoreLevels.metrics_from_sums`' bit for bit: the level sums are integers, kept in int64 (exact in any order:
    AUROC's U = P N - sum p (FP - t / 2) is exact, then one division as there), and AUPRC's precision masses
    p TP / (TP + FP) are each one float64 division of the same integers, summed by the same `reduceat` over the
    same runs of levels. What is saved: two cumulative sums per permutation, not four, in int64 (numpy's float64
    cumsum is ~10x slower), over every output at once (the sum before an output is taken off at its first level,
    so the running sum restarts there; it is known: P, or P + N less the negatives below the last level); the
    level sums are transposed in cache-sized row blocks, not as one strided copy.
    """

    def __init__(self, levels: ScoreLevels, total: np.ndarray) -> None:
        n_levels = levels.n_levels
        self.levels = levels
        self.with_levels = np.flatnonzero(np.diff(levels.offsets) > 0)  # outputs with a positive
        self.starts = levels.offsets[self.with_levels]  # their first levels: the runs `reduceat` sums
        pooled = np.rint(np.asarray(total, dtype=np.float64)[:, 0]).astype(np.int64)
        self.p_total, self.t_total = pooled[:n_levels], pooled[2 * n_levels : 3 * n_levels]
        self.tp_total = self._running(self.p_total)
        self.n_total = self._running(self.p_total + pooled[n_levels : 2 * n_levels] + self.t_total)
        ends = np.r_[self.starts[1:], n_levels] - 1
        # The pooled set holds both copies of every image: P and N of each permuted model are half its sums.
        pos = self.tp_total[ends] // 2
        neg = (self.n_total[ends] - self.tp_total[ends] + pooled[3 * n_levels + self.with_levels]) // 2
        self.pos_before = pos[:-1]  # the running sum of positives restarts after each output's P
        self.pos, self.pairs = pos.astype(np.float64), (pos * neg).astype(np.float64)
        self.defined = neg > 0
        self.all_images = pos + neg  # P + N per output with levels
        self.z_rows = 3 * n_levels + self.with_levels

    def _running(self, values: np.ndarray, before: np.ndarray | None = None) -> np.ndarray:
        """Cumulative sums of `values` restarting at each output's first level; `before` (one per output but the
        first): the sum of the output before, which is taken off at the restart (and put back after)."""
        if before is None:
            return np.concatenate([np.cumsum(part) for part in np.split(values, self.starts[1:])])
        values[self.starts[1:]] -= before
        out = np.cumsum(values)
        values[self.starts[1:]] += before
        return out

    def metrics(self, sums: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(A' metrics, B' metrics) from `levels.sums(weights)` of A' ((rows, B), B permutations): dicts of
        'auroc' and 'auprc' arrays (K, B), NaN where an output has no positive or no negative."""
        levels = self.levels
        n_levels, n_cols = levels.n_levels, sums.shape[1]
        out_a = {m: np.full((levels.n_outputs, n_cols), np.nan) for m in PERMUTATION_METRICS}
        out_b = {m: np.full((levels.n_outputs, n_cols), np.nan) for m in PERMUTATION_METRICS}
        if not len(self.starts):
            return out_a, out_b
        p, images = np.empty((n_cols, n_levels), np.int64), np.empty((n_cols, n_levels), np.int64)
        ties = np.empty((n_cols, n_levels), np.int64) if levels.has_ties else None
        for start in range(0, n_levels, TRANSPOSE_ROWS):  # (levels, B) float32 -> (B, levels) int64 in cache
            rows = slice(start, min(start + TRANSPOSE_ROWS, n_levels))
            block = sums[rows] + sums[n_levels + rows.start : n_levels + rows.stop]  # p + a: exact in float32
            p[:, rows] = sums[rows].T
            if ties is not None:
                tie_block = sums[2 * n_levels + rows.start : 2 * n_levels + rows.stop]
                ties[:, rows] = tie_block.T
                block += tie_block
            images[:, rows] = block.T
        # Images at or above the last level of each output: its P + N less the negatives below (row z).
        images_in = self.all_images - np.rint(sums[self.z_rows].T).astype(np.int64)
        for col in range(n_cols):
            self._score(col, p[col], images[col], None if ties is None else ties[col], images_in[col], out_a, out_b)
        return out_a, out_b

    def _score(
        self,
        col: int,
        p: np.ndarray,
        images: np.ndarray,
        ties: np.ndarray | None,
        images_in: np.ndarray,
        out_a: dict[str, np.ndarray],
        out_b: dict[str, np.ndarray],
    ) -> None:
        """Both models' AUROC and AUPRC of every output for one permutation, into column `col`."""
        tp = self._running(p, self.pos_before)
        n = self._running(images, images_in[:-1])
        sides = [(p, tp, n, ties, out_a)]
        t_b = None if ties is None else self.t_total - ties
        sides.append((self.p_total - p, self.tp_total - tp, self.n_total - n, t_b, out_b))
        scored = self.with_levels[self.defined]
        for p_s, tp_s, n_s, t_s, out in sides:
            # 2 sum p (FP - t / 2), FP = n - TP (the images at or above a level, less the positives)
            twice = n_s - tp_s
            twice *= 2
            if t_s is not None:
                twice -= t_s
            twice *= p_s
            below = np.add.reduceat(twice, self.starts) / 2
            with np.errstate(divide="ignore", invalid="ignore"):  # no negative: 0 / 0, left out below
                auroc = (self.pairs - below) / self.pairs
            out["auroc"][scored, col] = auroc[self.defined]
            # Precision mass p TP / (TP + FP) where p > 0, else 0 (where p = 0: 0 / max(n, 1) = 0 as well).
            tp_s *= p_s
            mass = np.true_divide(tp_s, np.maximum(n_s, 1, out=n_s))
            out["auprc"][scored, col] = (np.add.reduceat(mass, self.starts) / self.pos)[self.defined]


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
            ranked[keep, k] = mid_ranks(scores[keep, k]) / keep.sum()
    return ranked


def mid_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their mean rank: `scipy.stats.rankdata(values)` (the same float64 values, exact
    half-integers), from one unstable sort (a tie group's members share one rank whatever their order); all NaN
    if any value is NaN, as rankdata propagates it."""
    if np.isnan(values).any():
        return np.full(len(values), np.nan)
    order = np.argsort(values)
    ordered = values[order]
    new_group = np.r_[True, ordered[1:] != ordered[:-1]]
    first = np.flatnonzero(new_group)  # 0-based position of each tie group's first member
    last = np.r_[first[1:], len(values)]  # ... and one past its last
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((first + 1 + last) / 2, last - first)
    return ranks


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
