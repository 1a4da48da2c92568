"""Classification rows of results.parquet: every metric per output and macro with bootstrap CIs, and the
F1-optimal thresholds that validation hands to test."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.errors import ConfigError, PredictionsError
from pipeline.stats.bootstrap import bootstrap_metrics
from pipeline.stats.metrics import METRICS, f1_optimal_thresholds
from pipeline.stats.permutation import MACRO
from pipeline.stats.tables import (
    PREDICTION_COLUMNS,
    Table,
    clusters_of,
    pivot,
    require,
    results_frame,
    run_identity,
    split_rows,
)

THRESHOLD_METRICS = ("f1", "sensitivity", "specificity")
# An output with fewer test positives (or negatives) than this, counted in sampling units, gets no CI: there a
# percentile bootstrap interval covers 0.81-0.89 of the time instead of 0.95 (benchmarks/bench_intervals.py).
MIN_CI_CLASS_UNITS = 8
NO_CI = "no CI"
TOO_FEW = f"{NO_CI}, too few"  # the estimate is too uncertain to rank: a report never calls it best


def evaluate_predictions(
    predictions: pd.DataFrame,
    n_resamples: int = 1000,
    seed: int = 0,
    ci_method: str = "percentile",
    cluster_column: str | None = "patient_id",
    stratified: bool = False,
    thresholds: dict[str, float] | None = None,
    val_predictions: pd.DataFrame | None = None,
    confidence: float = 0.95,
    threshold_transfer: str = "score",
    prior_scored: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Every metric per output and macro with bootstrap CIs, in the results.parquet schema.

    Test rows are those with split == 'test' (all rows when there is no split column). F1, sensitivity and
    specificity use `thresholds` (per output), else the F1-optimal threshold on `val_predictions` (or on the
    table's split == 'val' rows), else 0.5; the note says which. `threshold_transfer='quantile'` carries a
    validation threshold to test as a positive rate (the test score above which the same fraction of test
    images lies) instead of as a score: use it when the validation scores come from another model than the
    test scores (the probe's sweep head vs its refit head), whose scales differ. Resampling is by
    `cluster_column` when some value of it holds several images (cluster bootstrap), else by image. An output
    with fewer than MIN_CI_CLASS_UNITS positive (or negative) test units, or whose resamples all give one value
    (a constant score, perfect separation), gets its estimate without a CI and a note saying why. The macro
    averages the outputs with positive and negative test labels (a set fixed by the test labels alone, the same
    for every run on them); the others get defined=False, and the macro's note names both. `prior_scored` (output
    -> reason in train) names outputs whose scores are their training prior (a constant: AUROC 0.5), for the notes.
    """
    if ci_method not in ("percentile", "bca"):
        raise ConfigError(f"ci_method must be 'percentile' or 'bca', not {ci_method!r}")
    if threshold_transfer not in ("score", "quantile"):
        raise ConfigError(f"threshold_transfer must be 'score' or 'quantile', not {threshold_transfer!r}")
    if n_resamples < 1:
        raise ConfigError(f"n_resamples must be at least 1, not {n_resamples}")
    require(predictions, PREDICTION_COLUMNS, "predictions")
    identity = run_identity(predictions)
    test = split_rows(predictions, "test", fallback_all=True)
    if val_predictions is None and "split" in predictions.columns:
        val_predictions = split_rows(predictions, "val", fallback_all=False)
    table = pivot(test, "predictions")
    if not table.outputs:
        raise PredictionsError("the predictions table has no test rows; nothing to evaluate")

    cut, cut_source = _thresholds(table, thresholds, val_predictions, by_rate=threshold_transfer == "quantile")
    clusters, unit_name = clusters_of(test, table.image_ids, cluster_column)
    result = bootstrap_metrics(
        table.labels,
        table.scores,
        clusters=clusters,
        thresholds=cut,
        n_resamples=n_resamples,
        seed=seed,
        stratified=stratified,
        ci_method=ci_method,
        confidence=confidence,
    )
    ci_note = (
        f"{confidence:.0%} {ci_method} CI, {n_resamples} resamples by {unit_name}{', stratified' if stratified else ''}"
    )
    n_outputs = len(table.outputs)
    macro_note = _macro_note(table.outputs, result.defined, prior_scored or {})
    pos_units, neg_units = _class_units(table.labels, clusters)
    unit_word = "images" if clusters is None else "patients" if cluster_column == "patient_id" else "clusters"
    rows = []
    for metric in METRICS:
        for j, name in enumerate([*table.outputs, MACRO]):
            is_macro = j == n_outputs
            defined = bool(result.defined.any()) if is_macro else bool(result.defined[j])
            if metric == "prevalence" and not is_macro:
                defined = result.n_pos[j] + result.n_neg[j] > 0
            notes = [ci_note]
            if is_macro:
                notes[:0] = macro_note
            elif not result.defined[j]:
                reason = "no positive" if result.n_pos[j] == 0 else "no negative"
                notes.insert(0, f"undefined: {reason} test labels")
            elif name in (prior_scored or {}):
                notes.insert(0, f"scored by its training prior ({prior_scored[name]} in train): AUROC 0.5")
            if metric in THRESHOLD_METRICS and not is_macro:
                notes.append(f"threshold {cut[j]:.4g} ({cut_source[j]})")
            bad = int(result.n_undefined[metric][j])
            if is_macro and defined and result.n_macro_dropped.get(metric, 0):
                notes.append(_macro_dropped_note(result, table.outputs, metric, n_resamples))
            elif defined and bad:
                notes.append(f"{bad} of {n_resamples} resamples undefined")
            low, high = (result.ci_low[metric][j], result.ci_high[metric][j]) if defined else (np.nan, np.nan)
            why = _no_ci_reason(
                metric, low, high, None if is_macro else (pos_units[j], neg_units[j]), unit_word, n_resamples
            )
            if defined and why:
                low, high = np.nan, np.nan
                notes.insert(1 if is_macro or name in (prior_scored or {}) else 0, why)
            n_pos = result.n_pos[result.defined].sum() if is_macro else result.n_pos[j]
            n_all = (
                int(np.any(~np.isnan(table.labels), axis=1).sum()) if is_macro else result.n_pos[j] + result.n_neg[j]
            )
            rows.append(
                {
                    **identity,
                    "output": name,
                    "metric": metric,
                    "estimate": result.estimates[metric][j] if defined else np.nan,
                    "ci_low": low,
                    "ci_high": high,
                    "n": int(n_all),
                    "n_pos": int(n_pos),
                    "defined": defined,
                    "note": "; ".join(notes),
                }
            )
    return results_frame(rows)


def _class_units(labels: np.ndarray, clusters: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per output, the number of sampling units (patients, else images) holding a positive and a negative."""
    units = np.arange(len(labels)) if clusters is None else np.unique(clusters, return_inverse=True)[1].ravel()
    pos = np.array([len(np.unique(units[labels[:, k] == 1])) for k in range(labels.shape[1])])
    neg = np.array([len(np.unique(units[labels[:, k] == 0])) for k in range(labels.shape[1])])
    return pos, neg


def _no_ci_reason(
    metric: str, low: float, high: float, counts: tuple[int, int] | None, unit_word: str, n_resamples: int
) -> str:
    """Why an estimate is printed without a CI ('' when the CI stands): too few positive or negative test units
    for the bootstrap to hold its level, or every resample giving the estimate itself (zero width)."""
    if counts is not None and metric != "prevalence" and min(counts) < MIN_CI_CLASS_UNITS:
        which = "positive" if counts[0] <= counts[1] else "negative"
        unit = unit_word.removesuffix("s") if min(counts) == 1 else unit_word
        return (
            f"{TOO_FEW}: {min(counts)} {which} test {unit}, fewer than {MIN_CI_CLASS_UNITS}, where a "
            "bootstrap interval does not hold its level"
        )
    if n_resamples > 1 and np.isfinite(low) and low == high:
        return f"{NO_CI}: every resample gives {low:.4g} (a constant score or perfect separation), no spread to show"
    return ""


def _macro_note(outputs: list[str], defined: np.ndarray, prior_scored: dict[str, str]) -> list[str]:
    """What the macro covers: 'mean over K of N outputs (those with test positives and negatives)', the outputs
    left out, and those in it scored by their training prior."""
    notes = [f"mean over {int(defined.sum())} of {len(outputs)} outputs (those with test positives and negatives)"]
    left_out = [name for name, ok in zip(outputs, defined, strict=True) if not ok]
    if left_out:
        notes.append(f"{len(left_out)} without test positives or negatives left out: {', '.join(left_out)}")
    by_reason: dict[str, list[str]] = {}
    for name, ok in zip(outputs, defined, strict=True):
        if ok and name in prior_scored:
            by_reason.setdefault(prior_scored[name], []).append(name)
    for reason, names in by_reason.items():
        what = "train positives" if reason == "no positive labels" else "train negatives"
        notes.append(f"{', '.join(names)} without {what} scored by their training prior (AUROC 0.5)")
    return notes


def _thresholds(
    test: Table, given: dict[str, float] | None, val: pd.DataFrame | None, by_rate: bool = False
) -> tuple[np.ndarray, list[str]]:
    """Per test output: (threshold, where it came from). `by_rate` moves a validation threshold to test as the
    same fraction of images called positive (the test score at that quantile) instead of as a score."""
    outputs = test.outputs
    if given is not None:
        missing = [o for o in outputs if o not in given]
        if missing:
            raise ConfigError(f"thresholds given for some outputs but not for {missing}")
        return np.array([float(given[o]) for o in outputs]), ["given"] * len(outputs)
    cut = np.full(len(outputs), 0.5)
    source = ["default 0.5, no validation predictions"] * len(outputs)
    if val is None or not len(val):
        return cut, source
    table = pivot(val, "validation predictions")
    chosen = f1_optimal_thresholds(table.labels, table.scores)
    for j, name in enumerate(outputs):
        if name not in table.outputs:
            continue
        k = table.outputs.index(name)
        labels = table.labels[:, k][~np.isnan(table.labels[:, k])]
        if not labels.any() or labels.all():
            source[j] = "default 0.5, validation has one class"
        elif by_rate:
            val_scores = table.scores[:, k][~np.isnan(table.scores[:, k])]
            test_scores = test.scores[:, j][~np.isnan(test.scores[:, j])]
            rate = float(np.mean(val_scores >= chosen[k]))
            cut[j] = float(np.quantile(test_scores, 1.0 - rate, method="higher"))
            source[j] = f"F1-optimal on validation, {rate:.1%} called positive there, the same rate on test"
        else:
            cut[j], source[j] = chosen[k], "F1-optimal on validation"
    return cut, source


def _macro_dropped_note(result, outputs: list[str], metric: str, n_resamples: int) -> str:
    """The macro averages a fixed set of findings; say how many resamples lacked one (left out of the CI)."""
    defined = np.flatnonzero(result.defined)
    rarest = defined[np.argsort(np.minimum(result.n_pos[defined], result.n_neg[defined]), kind="stable")[:3]]
    fewest = ", ".join(f"{outputs[k]} ({int(result.n_pos[k])} test positives)" for k in rarest)
    return (
        f"{result.n_macro_dropped[metric]} of {n_resamples} resamples left out of the macro CI: a finding had no "
        f"positive or negative in them, so the CI may under-cover (fewest: {fewest})"
    )
