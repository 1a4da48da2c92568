"""Survival rows of results.parquet: per endpoint, log-rank p, hazard ratios, C-index, KM end-point survival of
the low/high risk groups and time-dependent AUROC; `risk_groups` is the grouping rule the KM figure shares."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from pipeline.errors import ChexError, ConfigError
from pipeline.stats.survival import (
    KMGroups,
    c_index,
    cox_hazard_ratio,
    kaplan_meier_groups,
    time_dependent_auroc,
)
from pipeline.stats.tables import SURVIVAL_COLUMNS, require, results_frame, run_identity, split_rows

log = logging.getLogger(__name__)


RISK_RULE = "median risk on test"  # the paper's rule: the test cohort split at its own median predicted risk


def evaluate_survival(
    survival: pd.DataFrame,
    grouping: str | float = "median",
    horizons: list[float] | None = None,
) -> pd.DataFrame:
    """Per endpoint: log-rank p, hazard ratios, C-index, end-point KM survival of the low/high risk groups.

    Test subjects (split == 'test', else all) are split at `grouping`: a float threshold, or 'median', the median
    risk on test (the paper's rule; label-free, so nothing leaks; any validation rows are not used, their scores
    come from another head). Metrics (output = endpoint): logrank_p, hazard_ratio (Cox, high vs low group, 95%
    CI), hazard_ratio_per_sd (Cox, per standard deviation of the risk score), c_index (Harrell), survival_low_risk
    / survival_high_risk (KM survival at the end of follow-up with its 95% band), and td_auroc_<h>y per horizon h
    (years, IPCW).
    """
    require(survival, SURVIVAL_COLUMNS, "survival")
    if not (grouping == "median" or isinstance(grouping, int | float)):
        raise ConfigError(f"grouping must be 'median' or a risk threshold, not {grouping!r}")
    identity = run_identity(survival)
    test = split_rows(survival, "test", fallback_all=True)
    rows = []
    for endpoint in pd.unique(test["endpoint"]):
        subjects, threshold, source = risk_groups(survival, endpoint, grouping)
        base = {**identity, "output": str(endpoint)}
        common = f"one score per subject (mean over its images); high risk = score > {threshold:.4g} ({source})"
        rows.extend(_survival_rows(base, subjects, threshold, common, horizons or []))
    return results_frame(rows)


def risk_groups(
    survival: pd.DataFrame, endpoint: object, grouping: str | float = "median"
) -> tuple[pd.DataFrame, float, str]:
    """One endpoint's test subjects (index patient_id; mean risk_score over its images, time, event) and the
    low/high threshold with its source (`RISK_RULE` or 'given'): the rule of `evaluate_survival`, shared with the
    report's KM figure."""
    test = split_rows(survival, "test", fallback_all=True)
    subjects = _per_subject(test[test["endpoint"] == endpoint])
    if grouping != "median":
        return subjects, float(grouping), "given"
    return subjects, float(np.median(subjects["risk_score"].to_numpy(dtype=np.float64))), RISK_RULE


def _per_subject(group: pd.DataFrame) -> pd.DataFrame:
    subjects = group.groupby("patient_id", sort=False).agg(
        risk_score=("risk_score", "mean"), time=("time", "first"), event=("event", "first")
    )
    return subjects.dropna()


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
    sd = risk.std(ddof=1) if len(risk) > 1 else 0.0  # the sample SD, as a paper's "per SD" means
    per_sd = (risk - risk.mean()) / (sd or 1.0)
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
