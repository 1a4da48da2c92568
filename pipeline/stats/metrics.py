"""Classification metrics of a test set and of any weighted copy of it (a bootstrap resample, a permutation).

The one idea: sort each output's scores once. Then every metric chex reports (AUROC, AUPRC, F1, sensitivity,
specificity, prevalence) of a *weighted* sample is a function of a few sums of weights per score "level", and
those sums for many resamples at once are one sparse matrix product `levels @ counts`. A resample drawn with
replacement is a vector of counts per sampling unit (image or patient), so 1,000 resamples cost 1,000 columns
of one product, not 1,000 sorts.

Levels of one output, in descending score order: every distinct score that has a positive is a level. Per level l
the sums needed are p_l (positive weight at that score), t_l (negative weight tied with it, as sklearn ties them)
and a_l (negative weight scored strictly between level l-1 and l); per output also z (negatives below the last
level) and s (negatives of the one run that straddles the threshold that are scored >= it). With P, N the totals
and TP_l, FP_l the cumulative positive and negative weights down to and including level l:
    AUROC = (P * N - sum_l p_l * (FP_l - t_l / 2)) / (P * N)   (Mann-Whitney U with ties counted 1/2 = sklearn)
    AP    = sum_l p_l * TP_l / (TP_l + FP_l) / P                 (sklearn's average_precision_score)
and TP, FP at the threshold are the cumulative sums at the last level scored >= threshold (+ s).
All sums of weights are integers (exact in float64); only AUROC's and AP's final ratios round.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

METRICS = ("auroc", "auprc", "f1", "sensitivity", "specificity", "prevalence")
UNCERTAIN_LABEL = -1.0  # the cards' uncertain label: masked (left out per output) like NaN
# Float32 sums of integer counts are exact below 2**24; above that the product runs in float64.
_FLOAT32_EXACT = 2**24


@dataclass(frozen=True)
class ScoreLevels:
    """The sorted score levels of K outputs over `n_units` sampling units (see module docstring).

    `matrix` rows: p of every level, then a, then t (n_levels rows each), then z and s (K rows each), so that
    `matrix @ counts` (counts: (n_units, B) weight of each unit) gives every sum of one resample per column.
    """

    matrix: sparse.csr_matrix  # (3 * n_levels + 2 * K, n_units)
    offsets: np.ndarray  # (K + 1,) level offsets of each output
    n_above: np.ndarray  # (K,) levels scored >= the output's threshold (a prefix of its levels)
    has_ties: bool  # any negative tied with a positive (else the t rows are empty and skipped)
    n_units: int
    dtype: type

    @property
    def n_outputs(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_levels(self) -> int:
        return int(self.offsets[-1])

    def sums(self, counts: np.ndarray) -> np.ndarray:
        """Every weight sum, (rows, B) in the matrix dtype (exact integers), for unit weights (n_units, B)."""
        counts = np.asarray(counts, dtype=self.dtype)
        counts = counts[:, None] if counts.ndim == 1 else counts
        return self.matrix @ counts

    def metrics(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """Every metric of METRICS for each output and weight column: dict of (K, B) arrays, NaN if undefined."""
        return self.metrics_from_sums(self.sums(counts))

    def metrics_from_sums(self, sums: np.ndarray) -> dict[str, np.ndarray]:
        """The metrics from `sums(...)` output (or any (rows, B) array of level weight sums)."""
        n_levels, n_outputs = self.n_levels, self.n_outputs
        # (B, rows) float64 in one copy: the level axis contiguous for cumsum / reduceat.
        block = np.asarray(sums).T.astype(np.float64, order="C")
        p = block[:, :n_levels]
        a = block[:, n_levels : 2 * n_levels]
        t = block[:, 2 * n_levels : 3 * n_levels]
        z = block[:, 3 * n_levels : 3 * n_levels + n_outputs]
        s = block[:, 3 * n_levels + n_outputs :]
        return _metrics(p, a, t if self.has_ties else None, z, s, self.offsets, self.n_above)


def build_levels(
    labels: np.ndarray,
    scores: np.ndarray,
    units: np.ndarray | None = None,
    thresholds: np.ndarray | None = None,
    n_units: int | None = None,
) -> ScoreLevels:
    """Sort each output's scores into levels. labels/scores: (n, K); NaN and -1 (uncertain) labels are left out
    per output (`binary_labels`).

    `units[i]` is the sampling unit (cluster) of row i (default: each row its own unit); `thresholds` (K,) is the
    decision threshold per output (score >= threshold is a positive call; default: none, F1 etc. use +inf).
    """
    labels = binary_labels(labels)
    scores = _as_2d(scores).astype(np.float64)
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in shape")
    n, n_outputs = labels.shape
    units = np.arange(n) if units is None else np.asarray(units, dtype=np.int64)
    if n_units is None:
        n_units = int(units.max()) + 1 if n else 0
    thresholds = np.full(n_outputs, np.inf) if thresholds is None else np.asarray(thresholds, dtype=np.float64)

    parts = []  # (block, row within block, unit) per output, in the narrowest dtypes: 8M rows are common
    index = np.int32 if 3 * n * n_outputs + 2 * n_outputs + n_units < 2**31 else np.int64
    offsets = np.zeros(n_outputs + 1, dtype=np.int64)
    n_above = np.zeros(n_outputs, dtype=np.int64)
    for k in range(n_outputs):
        valid = ~np.isnan(labels[:, k])
        if np.isnan(scores[valid, k]).any():
            raise ValueError(f"output {k}: NaN scores where the label is known")
        order = np.argsort(-scores[valid, k])  # a tie's order does not matter: its items share one row
        item, block, row, n_levels_k, n_above[k] = _place_sorted(
            scores[valid, k][order], labels[valid, k][order] > 0.5, thresholds[k]
        )
        offsets[k + 1] = offsets[k] + n_levels_k
        row = np.where(block < 3, row + offsets[k], k).astype(index)
        parts.append((block.astype(np.int8), row, units[valid][order][item].astype(index)))

    n_levels = int(offsets[-1])
    block_start = np.array([0, n_levels, 2 * n_levels, 3 * n_levels, 3 * n_levels + n_outputs], dtype=index)
    rows = np.concatenate([block_start[b] + r for b, r, _ in parts]) if parts else np.zeros(0, index)
    cols = np.concatenate([u for _, _, u in parts]) if parts else np.zeros(0, index)
    has_ties = any((b == 2).any() for b, _, _ in parts)
    del parts
    # Largest possible weight sum of one row: every unit drawn, each holding up to its image count.
    per_unit = np.bincount(units, minlength=max(n_units, 1)) if n else np.zeros(1, np.int64)
    dtype = np.float32 if n_units * max(int(per_unit.max()), 1) < _FLOAT32_EXACT else np.float64
    matrix = sparse.csr_matrix(
        (np.ones(len(rows), dtype=dtype), (rows, cols)), shape=(3 * n_levels + 2 * n_outputs, n_units), dtype=dtype
    )
    return ScoreLevels(matrix, offsets, n_above, has_ties, n_units, dtype)


def _metrics(
    p: np.ndarray,
    a: np.ndarray,
    t: np.ndarray | None,
    z: np.ndarray,
    s: np.ndarray,
    offsets: np.ndarray,
    n_above: np.ndarray,
) -> dict[str, np.ndarray]:
    """The metrics per output (K, B) from level sums laid out (B, n_levels); see the module docstring."""
    n_cols = p.shape[0]
    lengths = np.diff(offsets)
    nonempty = lengths > 0
    starts, ends = offsets[:-1], offsets[1:] - 1

    def at(cum: np.ndarray, index: np.ndarray, valid: np.ndarray) -> np.ndarray:
        out = np.zeros((n_cols, len(index)))
        out[:, valid] = cum[:, index[valid]]
        return out

    def segment_sum(values: np.ndarray) -> np.ndarray:
        out = np.zeros((n_cols, len(lengths)))
        if nonempty.any():
            out[:, nonempty] = np.add.reduceat(values, starts[nonempty], axis=1)
        return out

    f = a if t is None else a + t
    tp_all = np.cumsum(p, axis=1)
    fp_all = np.cumsum(f, axis=1)
    base_tp = at(tp_all, starts - 1, (starts > 0) & nonempty)
    base_fp = at(fp_all, starts - 1, (starts > 0) & nonempty)
    pos_total = at(tp_all, ends, nonempty) - base_tp
    neg_total = at(fp_all, ends, nonempty) - base_fp + z
    tp = tp_all - np.repeat(base_tp, lengths, axis=1)
    fp = fp_all - np.repeat(base_fp, lengths, axis=1)
    del tp_all, fp_all
    last_called = starts + n_above - 1
    tp_at = at(tp, last_called, n_above > 0)
    fp_at = at(fp, last_called, n_above > 0) + s
    with np.errstate(divide="ignore", invalid="ignore"):
        below = fp if t is None else fp - 0.5 * t
        u_stat = pos_total * neg_total - segment_sum(p * below)
        auroc = u_stat / (pos_total * neg_total)
        precision_mass = np.divide(p * tp, tp + fp, out=np.zeros_like(tp), where=p > 0)
        auprc = segment_sum(precision_mass) / pos_total
        f1 = 2 * tp_at / (pos_total + tp_at + fp_at)
        sensitivity = tp_at / pos_total
        specificity = (neg_total - fp_at) / neg_total
        prevalence = pos_total / (pos_total + neg_total)
    undefined = (pos_total == 0) | (neg_total == 0)
    out = {"auroc": auroc, "auprc": auprc, "f1": f1, "sensitivity": sensitivity, "specificity": specificity}
    out = {name: np.where(undefined, np.nan, values).T for name, values in out.items()}
    out["prevalence"] = prevalence.T
    out["n_pos"] = pos_total.T
    out["n_neg"] = neg_total.T
    return out


def point_metrics(
    labels: np.ndarray, scores: np.ndarray, thresholds: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Metrics of each output on the sample itself: dict of (K,) arrays (NaN where undefined), plus n_pos/n_neg."""
    levels = build_levels(labels, scores, thresholds=thresholds)
    out = levels.metrics(np.ones(levels.n_units))
    return {name: values[:, 0] for name, values in out.items()}


def f1_optimal_thresholds(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per output, the score threshold (score >= t is positive) that maximises F1 on these (validation) rows.

    Outputs without a positive or a negative get 0.5.
    """
    labels = binary_labels(labels)
    scores = _as_2d(scores).astype(np.float64)
    thresholds = np.full(labels.shape[1], 0.5)
    for k in range(labels.shape[1]):
        valid = ~np.isnan(labels[:, k])
        y = labels[valid, k] > 0.5
        s = scores[valid, k]
        if y.all() or not y.any():
            continue
        order = np.argsort(-s, kind="stable")
        s_sorted, y_sorted = s[order], y[order]
        last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True]
        tp = np.cumsum(y_sorted)[last_of_tie]
        called = np.flatnonzero(last_of_tie) + 1
        f1 = 2 * tp / (y.sum() + called)
        thresholds[k] = s_sorted[last_of_tie][int(np.argmax(f1))]
    return thresholds


def _place_sorted(
    s_sorted: np.ndarray, y_sorted: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Rows of the items of one output (scores sorted descending): block (0 p, 1 a, 2 t, 3 z, 4 s) and level.

    Returns (item, block, level, number of levels, number of levels scored >= threshold): `item` indexes the
    sorted items; a negative of the run that straddles the threshold, scored >= it, appears twice (a/z and s).
    """
    if len(s_sorted) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, 0, 0
    new_group = np.r_[True, s_sorted[1:] != s_sorted[:-1]]
    group = np.cumsum(new_group) - 1
    n_groups = int(group[-1]) + 1
    has_pos = np.zeros(n_groups, bool)
    has_pos[group[y_sorted]] = True
    level_of_group = np.cumsum(has_pos) - 1  # level of a positive group; a negative-only group: the level above it
    n_levels = int(has_pos.sum())
    level = level_of_group[group]
    tied = has_pos[group]
    # Negatives not tied with a positive belong to the run just above the next level (block a), or to z.
    block = np.where(y_sorted, 0, np.where(tied, 2, np.where(level + 1 < n_levels, 1, 3)))
    level = np.where(y_sorted | tied, level, level + 1)
    n_above = int((s_sorted[new_group][has_pos] >= threshold).sum())
    # The run straddling the threshold is the one just above level n_above (or z when all levels are above).
    straddle = ((block == 1) & (level == n_above)) | ((block == 3) & (n_above == n_levels))
    straddle &= s_sorted >= threshold
    extra = np.flatnonzero(straddle)
    item = np.r_[np.arange(len(s_sorted)), extra]
    block = np.r_[block, np.full(len(extra), 4)]
    level = np.r_[level, np.zeros(len(extra), np.int64)]
    return item, block, level, n_levels, n_above


def binary_labels(labels: np.ndarray) -> np.ndarray:
    """Labels as float64 (n, K) with -1 (uncertain) masked to NaN like a missing label, the one rule of every
    statistic here; ValueError for any other value than 1, 0, -1 or NaN."""
    labels = _as_2d(np.asarray(labels, dtype=np.float64)).copy()
    labels[labels == UNCERTAIN_LABEL] = np.nan
    odd = ~np.isnan(labels) & (labels != 0) & (labels != 1)
    if odd.any():
        raise ValueError(
            f"labels must be 1, 0, -1 (uncertain, masked) or NaN; found {labels[odd][0]:g} "
            f"({int(odd.sum())} such values)"
        )
    return labels


def _as_2d(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    return values[:, None] if values.ndim == 1 else values
