"""Bootstrap confidence intervals of every metric, per output and macro, for 1,000 resamples in seconds.

A resample draws sampling units (patients for a cluster bootstrap, else images) with replacement; it is the
vector of how often each unit was drawn, and every metric of it comes from `ScoreLevels.metrics(counts)`
(pipeline.stats.metrics), a sparse product over the pre-sorted scores. Resamples are processed in chunks so
that memory stays bounded whatever `n_resamples` is. The draws come from one seeded numpy Generator (one per
stratum when stratified), so the same seed gives the same resamples whatever the chunk size.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.special import ndtr, ndtri

from pipeline.stats.metrics import METRICS, ScoreLevels, binary_labels, build_levels

log = logging.getLogger(__name__)

CI_METHODS = ("percentile", "bca")
_MEMORY_BUDGET_BYTES = 256 * 2**20
# Scratch arrays of (levels x resamples) float64 that metrics_from_level_sums holds at its peak.
_SCRATCH_ARRAYS = 12


@dataclass
class BootstrapResult:
    """Point estimates, resample replicates and CIs of each metric; the last column (index K) is the macro.

    estimates[m]: (K+1,); replicates[m]: (B, K+1); ci_low/ci_high[m]: (K+1,); n_undefined[m]: (K+1,) how many
    resamples had the metric undefined (an output without positives or negatives in that resample). The macro
    averages a fixed set of outputs, those `defined` (K,) in the full test set (positives and negatives): a
    resample in which one of them is undefined has no macro value and is left out of the macro CI;
    `n_macro_dropped[m]` counts those resamples (the macro CI under-covers when it is large).
    """

    estimates: dict[str, np.ndarray]
    replicates: dict[str, np.ndarray]
    ci_low: dict[str, np.ndarray]
    ci_high: dict[str, np.ndarray]
    n_undefined: dict[str, np.ndarray]
    defined: np.ndarray
    n_pos: np.ndarray
    n_neg: np.ndarray
    n_resamples: int
    ci_method: str
    confidence: float
    notes: list[str] = field(default_factory=list)
    n_macro_dropped: dict[str, int] = field(default_factory=dict)


def resample_indices(
    n_units: int,
    n_resamples: int,
    seed: int = 0,
    strata: np.ndarray | None = None,
    chunk_size: int = 100,
) -> Iterator[np.ndarray]:
    """Yield (chunk, n_units) arrays of unit indices drawn with replacement, `n_resamples` rows in all.

    With `strata` (one label per unit) each resample draws as many units from each stratum as it holds.
    The sequence of rows depends on (n_units, n_resamples, seed, strata) only, not on `chunk_size`.
    """
    if strata is None:
        rng = np.random.default_rng(seed)
        for start in range(0, n_resamples, chunk_size):
            yield rng.integers(0, n_units, size=(min(chunk_size, n_resamples - start), n_units))
        return
    strata = np.asarray(strata)
    members = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    rngs = [np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(len(members))]
    for start in range(0, n_resamples, chunk_size):
        size = min(chunk_size, n_resamples - start)
        yield np.concatenate(
            [m[rng.integers(0, len(m), size=(size, len(m)))] for m, rng in zip(members, rngs, strict=True)], axis=1
        )


def counts_from_indices(indices: np.ndarray, n_units: int) -> np.ndarray:
    """(n_units, B) float32 draw counts per unit from (B, draws) indices."""
    n_rows = indices.shape[0]
    flat = (indices.astype(np.int64) * n_rows + np.arange(n_rows, dtype=np.int64)[:, None]).ravel()
    return np.bincount(flat, minlength=n_rows * n_units).reshape(n_units, n_rows).astype(np.float32)


def bootstrap_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    clusters: np.ndarray | None = None,
    thresholds: np.ndarray | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    stratified: bool = False,
    strata: np.ndarray | None = None,
    ci_method: str = "percentile",
    confidence: float = 0.95,
    chunk_size: int | None = None,
    jackknife_groups: int = 2000,
) -> BootstrapResult:
    """Bootstrap every metric of METRICS per output and macro. labels/scores: (n, K), NaN labels left out per output.

    clusters: (n,) patient (or any cluster) id per row, resampled as a whole (cluster bootstrap); None resamples
    rows. stratified: resample within strata of units, by default the rarest output each unit is positive for
    (units with no positive form one stratum), which keeps rare findings in every resample; or give `strata`
    (one label per row, constant within a cluster). ci_method: 'percentile' or 'bca' (jackknife acceleration
    over units, or over `jackknife_groups` random groups of units when there are more units than that).
    """
    if ci_method not in CI_METHODS:
        raise ValueError(f"ci_method must be one of {CI_METHODS}, not {ci_method!r}")
    labels = binary_labels(labels)
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[:, None] if scores.ndim == 1 else scores
    units, n_units = _units_of(clusters, len(labels))
    levels = build_levels(labels, scores, units=units, thresholds=thresholds, n_units=n_units)
    full = levels.metrics(np.ones(n_units))
    defined = ~np.isnan(full["auroc"][:, 0])
    estimates = {m: _with_macro(full[m].T, defined)[0] for m in METRICS}

    unit_strata = None
    if stratified or strata is not None:
        unit_strata = _unit_strata(labels, units, n_units) if strata is None else _unit_values(strata, units, n_units)
    chunk = chunk_size or _chunk_size(levels, n_units)
    replicates: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    for indices in resample_indices(n_units, n_resamples, seed, unit_strata, chunk):
        values = levels.metrics(counts_from_indices(indices, n_units))
        for m in METRICS:
            replicates[m].append(_with_macro(values[m].T, defined, fixed=True))
    reps = {m: np.concatenate(replicates[m], axis=0) for m in METRICS}

    notes = []
    if ci_method == "bca":
        jack, note = _jackknife(levels, n_units, defined, jackknife_groups, seed)
        if note:
            notes.append(note)
        bounds = {m: _bca_interval(reps[m], estimates[m], jack[m], confidence) for m in METRICS}
    else:
        bounds = {m: _percentile_interval(reps[m], confidence) for m in METRICS}
    return BootstrapResult(
        estimates=estimates,
        replicates=reps,
        ci_low={m: bounds[m][0] for m in METRICS},
        ci_high={m: bounds[m][1] for m in METRICS},
        n_undefined={m: np.isnan(reps[m]).sum(axis=0) for m in METRICS},
        defined=defined,
        n_pos=full["n_pos"][:, 0],
        n_neg=full["n_neg"][:, 0],
        n_resamples=n_resamples,
        ci_method=ci_method,
        confidence=confidence,
        notes=notes,
        n_macro_dropped={m: int(np.isnan(reps[m][:, -1]).sum()) if defined.any() else 0 for m in METRICS},
    )


def _units_of(clusters: np.ndarray | None, n: int) -> tuple[np.ndarray, int]:
    if clusters is None:
        return np.arange(n), n
    _, units = np.unique(np.asarray(clusters), return_inverse=True)
    return units.ravel(), int(units.max()) + 1 if n else 0


def _with_macro(values: np.ndarray, defined: np.ndarray, fixed: bool = False) -> np.ndarray:
    """Append the macro column to (B, K) values: the mean over outputs defined in the full set, NaN-skipping;
    with `fixed`, NaN for a row where one of them is undefined (a bootstrap replicate of a fixed finding set)."""
    picked = values[:, defined]
    with np.errstate(invalid="ignore"), _quiet_nanmean():
        if not picked.shape[1]:
            macro = np.full(len(values), np.nan)
        else:
            macro = picked.mean(axis=1) if fixed else np.nanmean(picked, axis=1)
    return np.concatenate([values, macro[:, None]], axis=1)


@contextmanager
def _quiet_nanmean() -> Iterator[None]:
    """Silence numpy's 'Mean of empty slice' warning: an all-undefined row is NaN on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _chunk_size(levels: ScoreLevels, n_units: int) -> int:
    per_resample = 8 * _SCRATCH_ARRAYS * max(levels.matrix.shape[0], 1) + 24 * n_units
    return int(max(1, min(1000, _MEMORY_BUDGET_BYTES // per_resample)))


def _unit_values(values: np.ndarray, units: np.ndarray, n_units: int) -> np.ndarray:
    out = np.empty(n_units, dtype=np.asarray(values).dtype)
    out[units] = values
    return out


def _unit_strata(labels: np.ndarray, units: np.ndarray, n_units: int) -> np.ndarray:
    """Stratum of each unit: the rarest output it is positive for, or -1 (no positive)."""
    positive = np.nan_to_num(labels, nan=0.0) > 0.5
    unit_pos = np.zeros((n_units, labels.shape[1]), dtype=bool)
    np.logical_or.at(unit_pos, units, positive)
    rarity = np.argsort(unit_pos.sum(axis=0), kind="stable")
    ordered = unit_pos[:, rarity]
    first = ordered.argmax(axis=1)
    return np.where(ordered.any(axis=1), rarity[first], -1)


def _percentile_interval(reps: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1 - confidence) / 2
    with _quiet_nanmean():
        low, high = np.nanpercentile(reps, [100 * alpha, 100 * (1 - alpha)], axis=0)
    return low, high


def _bca_interval(
    reps: np.ndarray, estimate: np.ndarray, jack: np.ndarray, confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """Bias-corrected and accelerated interval (Efron 1987), as scipy.stats.bootstrap computes it, per column."""
    alpha = (1 - confidence) / 2
    low = np.full(reps.shape[1], np.nan)
    high = np.full(reps.shape[1], np.nan)
    for j in range(reps.shape[1]):
        theta = reps[:, j][~np.isnan(reps[:, j])]
        jk = jack[:, j][~np.isnan(jack[:, j])]
        if len(theta) == 0 or np.isnan(estimate[j]) or len(jk) < 2:
            continue
        share = ((theta < estimate[j]).sum() + (theta <= estimate[j]).sum()) / (2 * len(theta))
        z0 = ndtri(share)
        dev = jk.mean() - jk
        denominator = 6 * (dev**2).sum() ** 1.5
        accel = (dev**3).sum() / denominator if denominator > 0 else 0.0
        z = ndtri(np.array([alpha, 1 - alpha]))
        adjusted = ndtr(z0 + (z0 + z) / (1 - accel * (z0 + z)))
        if np.isnan(adjusted).any():
            continue
        low[j], high[j] = np.percentile(theta, 100 * adjusted)
    return low, high


def _jackknife(
    levels: ScoreLevels, n_units: int, defined: np.ndarray, max_groups: int, seed: int
) -> tuple[dict[str, np.ndarray], str]:
    """Delete-one-unit jackknife values (G, K+1) per metric; delete-one-group when units exceed max_groups."""
    note = ""
    if n_units <= max_groups:
        groups, n_groups = np.arange(n_units), n_units
    else:
        n_groups = max_groups
        groups = np.random.default_rng(seed).permutation(n_units) % n_groups
        note = f"BCa acceleration from a delete-one-group jackknife over {n_groups} random groups of units"
    membership = sparse.csc_matrix(
        (np.ones(n_units, dtype=levels.dtype), (np.arange(n_units), groups)), shape=(n_units, n_groups)
    )
    full = levels.sums(np.ones(n_units))
    chunk = _chunk_size(levels, 0)
    out: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    for start in range(0, n_groups, chunk):
        removed = (levels.matrix @ membership[:, start : start + chunk]).toarray()
        values = levels.metrics_from_sums(full - removed)
        for m in METRICS:
            out[m].append(_with_macro(values[m].T, defined))
    return {m: np.concatenate(v, axis=0) for m, v in out.items()}, note
