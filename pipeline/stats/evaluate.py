"""From a run's predictions/survival tables to the tidy results table a paper prints (DESIGN.md "Probe outputs").

`evaluate_predictions` -> results.parquet rows (one per output x metric, plus output='macro');
`evaluate_survival` -> the survival endpoints' rows of the same table; `compare_predictions` -> the paired
permutation test (and DeLong cross-check) between two runs scored on the same test images.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from pipeline.errors import ChexError, ConfigError, PredictionsError
from pipeline.stats.bootstrap import bootstrap_metrics
from pipeline.stats.delong import delong_test
from pipeline.stats.metrics import METRICS, f1_optimal_thresholds
from pipeline.stats.multiple import adjust_pvalues
from pipeline.stats.permutation import MACRO, PERMUTATION_METRICS, paired_permutation_test
from pipeline.stats.survival import (
    KMGroups,
    c_index,
    cox_hazard_ratio,
    kaplan_meier_groups,
    time_dependent_auroc,
)

log = logging.getLogger(__name__)

RUN_COLUMNS = ("dataset", "backbone", "head", "label_fraction")
RESULT_COLUMNS = (*RUN_COLUMNS, "output", "metric", "estimate", "ci_low", "ci_high", "n", "n_pos", "defined", "note")
PREDICTION_COLUMNS = ("image_id", "output", "score", "label")
SURVIVAL_COLUMNS = ("patient_id", "endpoint", "risk_score", "time", "event")
THRESHOLD_METRICS = ("f1", "sensitivity", "specificity")


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
) -> pd.DataFrame:
    """Every metric per output and macro with bootstrap CIs, in the results.parquet schema.

    Test rows are those with split == 'test' (all rows when there is no split column). F1, sensitivity and
    specificity use `thresholds` (per output), else the F1-optimal threshold on `val_predictions` (or on the
    table's split == 'val' rows), else 0.5; the note says which. `threshold_transfer='quantile'` carries a
    validation threshold to test as a positive rate (the test score above which the same fraction of test
    images lies) instead of as a score: use it when the validation scores come from another model than the
    test scores (the probe's sweep head vs its refit head), whose scales differ. Resampling is by
    `cluster_column` when some value of it holds several images (cluster bootstrap), else by image. Outputs
    without positive or negative test labels get defined=False and stay out of the macro, whose note counts them.
    """
    if ci_method not in ("percentile", "bca"):
        raise ConfigError(f"ci_method must be 'percentile' or 'bca', not {ci_method!r}")
    if threshold_transfer not in ("score", "quantile"):
        raise ConfigError(f"threshold_transfer must be 'score' or 'quantile', not {threshold_transfer!r}")
    if n_resamples < 1:
        raise ConfigError(f"n_resamples must be at least 1, not {n_resamples}")
    _require(predictions, PREDICTION_COLUMNS, "predictions")
    identity = _run_identity(predictions)
    test = _split_rows(predictions, "test", fallback_all=True)
    if val_predictions is None and "split" in predictions.columns:
        val_predictions = _split_rows(predictions, "val", fallback_all=False)
    table = _pivot(test, "predictions")
    if not table.outputs:
        raise PredictionsError("the predictions table has no test rows; nothing to evaluate")

    cut, cut_source = _thresholds(table, thresholds, val_predictions, by_rate=threshold_transfer == "quantile")
    clusters, unit_name = _clusters(test, table.image_ids, cluster_column)
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
    undefined = [name for name, ok in zip(table.outputs, result.defined, strict=True) if not ok]
    n_outputs = len(table.outputs)
    rows = []
    for metric in METRICS:
        for j, name in enumerate([*table.outputs, MACRO]):
            is_macro = j == n_outputs
            defined = bool(result.defined.any()) if is_macro else bool(result.defined[j])
            if metric == "prevalence" and not is_macro:
                defined = result.n_pos[j] + result.n_neg[j] > 0
            notes = [ci_note]
            if is_macro:
                notes.insert(0, f"mean over {int(result.defined.sum())} of {n_outputs} outputs")
                if undefined:
                    notes.insert(1, f"{len(undefined)} undefined left out: {', '.join(undefined)}")
            elif not result.defined[j]:
                reason = "no positive" if result.n_pos[j] == 0 else "no negative"
                notes.insert(0, f"undefined: {reason} test labels")
            if metric in THRESHOLD_METRICS and not is_macro:
                notes.append(f"threshold {cut[j]:.4g} ({cut_source[j]})")
            bad = int(result.n_undefined[metric][j])
            if defined and bad:
                notes.append(f"{bad} of {n_resamples} resamples undefined")
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
                    "ci_low": result.ci_low[metric][j] if defined else np.nan,
                    "ci_high": result.ci_high[metric][j] if defined else np.nan,
                    "n": int(n_all),
                    "n_pos": int(n_pos),
                    "defined": defined,
                    "note": "; ".join(notes),
                }
            )
    return _results_frame(rows)


def evaluate_survival(
    survival: pd.DataFrame,
    grouping: str | float = "median",
    val_survival: pd.DataFrame | None = None,
    horizons: list[float] | None = None,
) -> pd.DataFrame:
    """Per endpoint: log-rank p, hazard ratios, C-index, end-point KM survival of the low/high risk groups.

    Test subjects (split == 'test', else all) are split at `grouping`: a float threshold, or 'median' (the
    median risk on `val_survival` / the table's split == 'val' rows when present, else on the test subjects).
    Metrics (output = endpoint): logrank_p, hazard_ratio (Cox, high vs low group, 95% CI), hazard_ratio_per_sd
    (Cox, per standard deviation of the risk score), c_index (Harrell), survival_low_risk / survival_high_risk
    (KM survival at the end of follow-up with its 95% band), and td_auroc_<h>y per horizon h (years).
    """
    _require(survival, SURVIVAL_COLUMNS, "survival")
    if not (grouping == "median" or isinstance(grouping, int | float)):
        raise ConfigError(f"grouping must be 'median' or a risk threshold, not {grouping!r}")
    identity = _run_identity(survival)
    test = _split_rows(survival, "test", fallback_all=True)
    rows = []
    for endpoint in pd.unique(test["endpoint"]):
        subjects, threshold, source = risk_groups(survival, endpoint, grouping, val_survival)
        base = {**identity, "output": str(endpoint)}
        common = f"one score per subject (mean over its images); high risk = score > {threshold:.4g} ({source})"
        rows.extend(_survival_rows(base, subjects, threshold, common, horizons or []))
    return _results_frame(rows)


def compare_predictions(
    pred_a: pd.DataFrame,
    pred_b: pd.DataFrame,
    n_permutations: int = 1000,
    seed: int = 0,
    cluster_column: str | None = "patient_id",
    metrics: tuple[str, ...] = PERMUTATION_METRICS,
    adjust: str = "holm",
) -> pd.DataFrame:
    """Paired permutation test of run A vs run B on the same test images, per output and macro.

    Rows: output, metric, estimate_a, estimate_b, diff (A - B), p_value, p_adjusted (`adjust` over the outputs
    of one metric; the macro row is its own single test), delong_p (AUROC rows: DeLong's analytic test per
    output), n_permutations, exact, n, n_pos, model_a, model_b, note. Raises PredictionsError when the two
    tables do not hold the same (image_id, output) test pairs or disagree on a label.
    """
    for name, frame in (("A", pred_a), ("B", pred_b)):
        _require(frame, PREDICTION_COLUMNS, f"predictions {name}")
    test_a = _split_rows(pred_a, "test", fallback_all=True)
    test_b = _split_rows(pred_b, "test", fallback_all=True)
    _check_same_images(test_a, test_b)
    table_a = _pivot(test_a, "predictions A")
    table_b = _pivot(test_b, "predictions B")
    order = [table_b.outputs.index(o) for o in table_a.outputs]
    rows_b = pd.Index(table_b.image_ids).get_indexer(table_a.image_ids)
    labels_b = table_b.labels[rows_b][:, order]
    scores_b = table_b.scores[rows_b][:, order]
    both = ~np.isnan(table_a.labels) & ~np.isnan(labels_b)
    if (table_a.labels[both] != labels_b[both]).any() or (np.isnan(table_a.labels) != np.isnan(labels_b)).any():
        raise PredictionsError(
            "runs A and B hold different labels for the same test images (another label policy or manifest?); "
            "compare runs made from the same manifest"
        )
    clusters, unit_name = _clusters(test_a, table_a.image_ids, cluster_column)
    result = paired_permutation_test(
        table_a.labels,
        table_a.scores,
        scores_b,
        groups=clusters,
        n_permutations=n_permutations,
        seed=seed,
        metrics=metrics,
        outputs=table_a.outputs,
    )
    result["p_adjusted"] = np.nan
    for metric in metrics:
        per_output = (result["metric"] == metric) & (result["output"] != MACRO)
        result.loc[per_output, "p_adjusted"] = adjust_pvalues(result.loc[per_output, "p_value"].to_numpy(), adjust)
        result.loc[(result["metric"] == metric) & (result["output"] == MACRO), "p_adjusted"] = result.loc[
            (result["metric"] == metric) & (result["output"] == MACRO), "p_value"
        ]
    result["delong_p"] = np.nan
    if "auroc" in metrics:
        for j, name in enumerate(table_a.outputs):
            row = (result["metric"] == "auroc") & (result["output"] == name)
            result.loc[row, "delong_p"] = delong_test(
                table_a.labels[:, j], table_a.scores[:, j], scores_b[:, j]
            ).p_value
    result["model_a"] = _model_name(pred_a)
    result["model_b"] = _model_name(pred_b)
    result["note"] = (
        f"scores swapped per {unit_name}; p_adjusted: {adjust} over outputs; DeLong treats images as independent"
    )
    return result


# --- helpers -------------------------------------------------------------------------------------------------


class _Table:
    """Test predictions pivoted to (image x output) label and score matrices."""

    def __init__(self, image_ids: list[str], outputs: list[str], labels: np.ndarray, scores: np.ndarray):
        self.image_ids, self.outputs, self.labels, self.scores = image_ids, outputs, labels, scores


def _pivot(frame: pd.DataFrame, what: str) -> _Table:
    keys = frame[["image_id", "output"]].astype(str)
    duplicated = keys.duplicated()
    if duplicated.any():
        first = keys[duplicated].iloc[0]
        raise PredictionsError(
            f"{what}: {int(duplicated.sum())} duplicate (image_id, output) rows, e.g. "
            f"({first['image_id']}, {first['output']}); one run's predictions hold one row per test image and output"
        )
    image_ids = list(pd.unique(keys["image_id"]))
    outputs = list(pd.unique(keys["output"]))
    row = pd.Index(image_ids).get_indexer(keys["image_id"])
    col = pd.Index(outputs).get_indexer(keys["output"])
    labels = np.full((len(image_ids), len(outputs)), np.nan)
    scores = np.full((len(image_ids), len(outputs)), np.nan)
    labels[row, col] = _numeric(frame, "label", what)
    scores[row, col] = _numeric(frame, "score", what)
    known = ~np.isnan(labels)
    odd = known & (labels != 0) & (labels != 1)
    if odd.any():
        i, k = np.argwhere(odd)[0]
        raise PredictionsError(
            f"{what}: label {labels[i, k]:g} for ({image_ids[i]}, {outputs[k]}); labels must be 1, 0 or NaN "
            "(apply the uncertain-label policy before evaluating)"
        )
    missing = known & np.isnan(scores)
    if missing.any():
        i, k = np.argwhere(missing)[0]
        raise PredictionsError(
            f"{what}: {int(missing.sum())} labelled rows have no score, e.g. ({image_ids[i]}, {outputs[k]})"
        )
    return _Table(image_ids, outputs, labels, scores)


def _numeric(frame: pd.DataFrame, column: str, what: str) -> np.ndarray:
    """`column` as float64; PredictionsError naming the values that are not numbers (never read as missing)."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna()
    if bad.any():
        shown = sorted({repr(v) for v in frame[column][bad].unique()[:5]})
        raise PredictionsError(
            f"{what}: column {column!r} holds {int(bad.sum())} values that are not numbers ({', '.join(shown)}); "
            + ("labels must be 1, 0 or empty" if column == "label" else "scores must be numbers")
        )
    return values.to_numpy(dtype=np.float64)


def _require(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise PredictionsError(f"the {what} table lacks columns {missing}; it has {list(frame.columns)}")


def _run_identity(frame: pd.DataFrame) -> dict[str, object]:
    identity: dict[str, object] = {}
    for column in RUN_COLUMNS:
        if column not in frame.columns:
            identity[column] = np.nan if column == "label_fraction" else None
            continue
        values = pd.unique(frame[column].dropna())
        if len(values) > 1:
            raise PredictionsError(
                f"the table mixes {len(values)} values of {column} ({', '.join(map(str, values[:4]))}); "
                "evaluate one run at a time"
            )
        value = values[0] if len(values) else None
        identity[column] = value.item() if isinstance(value, np.generic) else value
    return identity


def _model_name(frame: pd.DataFrame) -> str:
    identity = _run_identity(frame)
    parts = [str(identity[c]) for c in ("backbone", "head") if identity[c] is not None]
    fraction = identity["label_fraction"]
    if fraction is not None and not (isinstance(fraction, float) and np.isnan(fraction)) and fraction != 1:
        parts.append(f"label_fraction={fraction:g}")
    return "/".join(parts) or "unnamed run"


def _split_rows(frame: pd.DataFrame, split: str, fallback_all: bool) -> pd.DataFrame | None:
    if "split" not in frame.columns:
        return frame if fallback_all else None
    rows = frame[frame["split"] == split]
    if len(rows):
        return rows
    return frame if fallback_all else None


def _clusters(test: pd.DataFrame, image_ids: list[str], column: str | None) -> tuple[np.ndarray | None, str]:
    if column is None or column not in test.columns:
        return None, "image"
    first = test.drop_duplicates("image_id")
    patients = pd.Series(first[column].to_numpy(), index=first["image_id"].astype(str)).reindex(image_ids)
    # An image without a patient id is its own cluster.
    patients = patients.astype(object).where(patients.notna(), pd.Series(image_ids, index=image_ids, dtype=object))
    patients = patients.astype(str).to_numpy()
    n_clusters = len(np.unique(patients))
    if n_clusters == len(image_ids):
        return None, "image"
    return patients, f"{column} ({n_clusters} clusters of {len(image_ids)} images)"


def _thresholds(
    test: _Table, given: dict[str, float] | None, val: pd.DataFrame | None, by_rate: bool = False
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
    table = _pivot(val, "validation predictions")
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


def _check_same_images(test_a: pd.DataFrame, test_b: pd.DataFrame) -> None:
    keys_a = set(zip(test_a["image_id"].astype(str), test_a["output"].astype(str), strict=True))
    keys_b = set(zip(test_b["image_id"].astype(str), test_b["output"].astype(str), strict=True))
    if keys_a == keys_b:
        return
    only_a, only_b = sorted(keys_a - keys_b), sorted(keys_b - keys_a)
    raise PredictionsError(
        "runs A and B were not scored on the same test images: "
        f"{len(only_a)} (image_id, output) pairs only in A (e.g. {only_a[:3]}), "
        f"{len(only_b)} only in B (e.g. {only_b[:3]}); a paired test needs both runs on one test split"
    )


def risk_groups(
    survival: pd.DataFrame, endpoint: object, grouping: str | float = "median", val_survival: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, float, str]:
    """One endpoint's test subjects (index patient_id; mean risk_score over its images, time, event) and the
    low/high threshold with its source: the rule of `evaluate_survival`, shared with the report's KM figure."""
    test = _split_rows(survival, "test", fallback_all=True)
    if val_survival is None and "split" in survival.columns:
        val_survival = _split_rows(survival, "val", fallback_all=False)
    subjects = _per_subject(test[test["endpoint"] == endpoint])
    threshold, source = _risk_threshold(grouping, endpoint, subjects, val_survival)
    return subjects, threshold, source


def _per_subject(group: pd.DataFrame) -> pd.DataFrame:
    subjects = group.groupby("patient_id", sort=False).agg(
        risk_score=("risk_score", "mean"), time=("time", "first"), event=("event", "first")
    )
    return subjects.dropna()


def _risk_threshold(
    grouping: str | float, endpoint: object, subjects: pd.DataFrame, val: pd.DataFrame | None
) -> tuple[float, str]:
    if grouping != "median":
        return float(grouping), "given"
    if val is not None and len(val):
        val_subjects = _per_subject(val[val["endpoint"] == endpoint])
        if len(val_subjects):
            return float(val_subjects["risk_score"].median()), "median risk on validation"
    return float(subjects["risk_score"].median()), "median risk on test"


SURVIVAL_METRICS = (
    "logrank_p",
    "hazard_ratio",
    "hazard_ratio_per_sd",
    "c_index",
    "survival_low_risk",
    "survival_high_risk",
)


def _survival_rows(
    base: dict, subjects: pd.DataFrame, threshold: float, common: str, horizons: list[float]
) -> list[dict]:
    time = subjects["time"].to_numpy(dtype=np.float64)
    event = subjects["event"].to_numpy(dtype=np.float64)
    risk = subjects["risk_score"].to_numpy(dtype=np.float64)
    n, n_events = len(time), int(event.sum())

    def row(metric: str, estimate: float, low=np.nan, high=np.nan, note="", n_=n, n_pos=n_events) -> dict:
        ok = bool(np.isfinite(estimate))
        return {
            **base,
            "metric": metric,
            "estimate": estimate,
            "ci_low": low,
            "ci_high": high,
            "n": int(n_),
            "n_pos": int(n_pos),
            "defined": ok,
            "note": "; ".join(filter(None, [note, common])),
        }

    if n_events == 0:
        return [row(m, np.nan, note="undefined: no events") for m in SURVIVAL_METRICS]
    groups: KMGroups | None = None
    why = ""
    try:
        groups = kaplan_meier_groups(time, event, risk, threshold=threshold)
    except ChexError as exc:  # the threshold leaves one group empty: only the group-free metrics exist
        why = f"undefined: {exc}"

    def cox_row(metric: str, covariate: np.ndarray, note: str) -> dict:
        try:
            cox = cox_hazard_ratio(time, event, covariate)
        except Exception as exc:  # lifelines raises plain errors when the fit does not converge
            log.warning("Cox fit failed for %s: %s", base["output"], exc)
            return row(metric, np.nan, note=f"undefined: Cox fit failed ({type(exc).__name__})")
        return row(metric, cox.hazard_ratio, cox.ci_low, cox.ci_high, f"{note}, 95% CI, Wald p {cox.p_value:.3g}")

    if groups is None:
        rows = [row(m, np.nan, note=why) for m in ("logrank_p", "hazard_ratio")]
    else:
        rows = [row("logrank_p", groups.logrank_p, note=f"log-rank chi2 {groups.logrank_statistic:.3g}")]
        if groups.low.n_events and groups.high.n_events:
            rows.append(
                cox_row("hazard_ratio", (risk > threshold).astype(np.float64), "Cox PH, high vs low risk group")
            )
        else:
            empty = "low" if groups.low.n_events == 0 else "high"
            rows.append(
                row("hazard_ratio", np.nan, note=f"undefined: no events in the {empty}-risk group (HR not estimable)")
            )
    per_sd = (risk - risk.mean()) / (risk.std() or 1.0)
    rows.append(cox_row("hazard_ratio_per_sd", per_sd, "Cox PH per SD of risk score"))
    rows.append(row("c_index", c_index(time, event, risk), note="Harrell's C"))
    if groups is None:
        rows += [row(m, np.nan, note=why) for m in ("survival_low_risk", "survival_high_risk")]
    else:
        for metric, curve in (("survival_low_risk", groups.low), ("survival_high_risk", groups.high)):
            note = f"KM survival at {curve.endpoint_time:.4g} (end of follow-up), 95% band"
            rows.append(
                row(
                    metric,
                    curve.endpoint_survival,
                    curve.endpoint_ci_lower,
                    curve.endpoint_ci_upper,
                    note,
                    curve.n,
                    curve.n_events,
                )
            )
    for horizon in horizons:
        value = time_dependent_auroc(time, event, risk, horizon)
        rows.append(row(f"td_auroc_{horizon:g}y", value, note=f"cumulative/dynamic AUROC at {horizon:g}, IPCW"))
    return rows


def _results_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    frame["defined"] = frame["defined"].astype(bool)
    frame[["n", "n_pos"]] = frame[["n", "n_pos"]].astype("int64")
    return frame
