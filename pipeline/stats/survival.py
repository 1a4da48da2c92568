"""Survival analysis of a predicted risk score: KM curves of low/high risk groups, log-rank, Cox, C-index.

Everything is computed by lifelines (Kaplan-Meier with exponential-Greenwood 95% bands, log-rank test, Cox
proportional hazards, Harrell's C-index); chex adds the grouping, the end-point survival, the numbers at risk
and the time-dependent AUROC at fixed horizons (cumulative cases / dynamic controls with inverse probability
of censoring weights, Uno et al. 2007).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import logrank_test
from lifelines.utils import concordance_index
from sklearn.metrics import roc_auc_score

from pipeline.errors import ConfigError


@dataclass(frozen=True)
class KMCurve:
    """One group's Kaplan-Meier estimate.

    timeline, survival, ci_lower, ci_upper: the step function (survival just after each time; the first time is
    0 with survival 1) and its pointwise 95% band. at_risk: one row per requested time with columns time,
    at_risk (subjects with follow-up time >= time), events and censored (cumulative counts before time), as
    printed under a KM figure. endpoint_*: the survival (and band) at `endpoint_time`.
    """

    label: str
    n: int
    n_events: int
    timeline: np.ndarray
    survival: np.ndarray
    ci_lower: np.ndarray
    ci_upper: np.ndarray
    at_risk: pd.DataFrame
    endpoint_time: float
    endpoint_survival: float
    endpoint_ci_lower: float
    endpoint_ci_upper: float


@dataclass(frozen=True)
class KMGroups:
    """Low- and high-risk KM curves (high = risk score > threshold), the threshold used and the log-rank test."""

    low: KMCurve
    high: KMCurve
    threshold: float
    logrank_p: float
    logrank_statistic: float
    at_times: np.ndarray


def kaplan_meier_groups(
    time: np.ndarray,
    event: np.ndarray,
    risk_score: np.ndarray,
    threshold: float | None = None,
    at_times: np.ndarray | None = None,
    endpoint_time: float | None = None,
    alpha: float = 0.05,
) -> KMGroups:
    """Split subjects at `threshold` (default: the median risk score) and fit a KM curve per group.

    at_times: times of the numbers-at-risk table (default 6 evenly spaced from 0 to the last follow-up);
    endpoint_time: where end-point survival is read (default: the last follow-up time of all subjects).
    """
    time, event, risk = _clean(time, event, risk_score)
    threshold = float(np.median(risk)) if threshold is None else float(threshold)
    high = risk > threshold
    if high.all() or not high.any():
        raise ConfigError(
            f"risk threshold {threshold:g} puts all {len(risk)} subjects in one group "
            f"(risk scores range {risk.min():g}..{risk.max():g}); choose a threshold inside that range"
        )
    at_times = np.linspace(0.0, time.max(), 6) if at_times is None else np.asarray(at_times, dtype=np.float64)
    endpoint_time = float(time.max()) if endpoint_time is None else float(endpoint_time)
    curves = {
        label: _km_curve(label, time[mask], event[mask], at_times, endpoint_time, alpha)
        for label, mask in (("low", ~high), ("high", high))
    }
    test = logrank_test(time[~high], time[high], event[~high], event[high])
    return KMGroups(
        low=curves["low"],
        high=curves["high"],
        threshold=threshold,
        logrank_p=float(test.p_value),
        logrank_statistic=float(test.test_statistic),
        at_times=at_times,
    )


@dataclass(frozen=True)
class CoxResult:
    """Hazard ratio of one covariate with its 95% CI and Wald p-value."""

    hazard_ratio: float
    ci_low: float
    ci_high: float
    p_value: float


def cox_hazard_ratio(time: np.ndarray, event: np.ndarray, covariate: np.ndarray) -> CoxResult:
    """Cox proportional hazards of one covariate (lifelines CoxPHFitter): hazard ratio per unit of it."""
    time, event, covariate = _clean(time, event, covariate)
    frame = pd.DataFrame({"time": time, "event": event, "x": covariate})
    fitter = CoxPHFitter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitter.fit(frame, duration_col="time", event_col="event")
    row = fitter.summary.loc["x"]
    return CoxResult(
        hazard_ratio=float(row["exp(coef)"]),
        ci_low=float(row["exp(coef) lower 95%"]),
        ci_high=float(row["exp(coef) upper 95%"]),
        p_value=float(row["p"]),
    )


def c_index(time: np.ndarray, event: np.ndarray, risk_score: np.ndarray) -> float:
    """Harrell's C-index: share of comparable pairs where the higher risk score has the earlier event."""
    time, event, risk = _clean(time, event, risk_score)
    return float(concordance_index(time, -risk, event))


def time_dependent_auroc(time: np.ndarray, event: np.ndarray, risk_score: np.ndarray, horizon: float) -> float:
    """Cumulative/dynamic AUROC at `horizon`: cases had the event by then, controls are still followed after it.

    Cases are weighted by 1 / G(T-), G the KM estimate of the censoring distribution (Uno et al. 2007), so that
    subjects censored before the horizon do not bias it; without censoring it is the plain AUROC of
    "event by horizon" among subjects followed past it or with the event. NaN without cases or controls.
    """
    time, event, risk = _clean(time, event, risk_score)
    case = (time <= horizon) & (event == 1)
    control = time > horizon
    if not case.any() or not control.any():
        return float("nan")
    censoring = KaplanMeierFitter().fit(time, 1 - event)
    grid = censoring.survival_function_.index.to_numpy()
    values = censoring.survival_function_.iloc[:, 0].to_numpy()
    # G(T-): the censoring survival just before each case's time (left limit of the step function).
    before = np.searchsorted(grid, time[case], side="left") - 1
    g_left = np.where(before >= 0, values[np.maximum(before, 0)], 1.0)
    keep = case | control
    weights = np.ones(len(time))
    weights[case] = 1.0 / g_left
    return float(roc_auc_score(case[keep], risk[keep], sample_weight=weights[keep]))


def _km_curve(
    label: str, time: np.ndarray, event: np.ndarray, at_times: np.ndarray, endpoint_time: float, alpha: float
) -> KMCurve:
    fitter = KaplanMeierFitter(alpha=alpha).fit(time, event, label=label)
    timeline = fitter.survival_function_.index.to_numpy(dtype=np.float64)
    survival = fitter.survival_function_[label].to_numpy()
    bands = fitter.confidence_interval_survival_function_
    lower, upper = bands.iloc[:, 0].to_numpy(), bands.iloc[:, 1].to_numpy()
    at = np.searchsorted(timeline, endpoint_time, side="right") - 1
    table = pd.DataFrame(
        {
            "time": at_times,
            "at_risk": [int((time >= t).sum()) for t in at_times],
            "events": [int(((time < t) & (event == 1)).sum()) for t in at_times],
            "censored": [int(((time < t) & (event == 0)).sum()) for t in at_times],
        }
    )
    return KMCurve(
        label=label,
        n=len(time),
        n_events=int(event.sum()),
        timeline=timeline,
        survival=survival,
        ci_lower=lower,
        ci_upper=upper,
        at_risk=table,
        endpoint_time=endpoint_time,
        endpoint_survival=float(survival[at]),
        endpoint_ci_lower=float(lower[at]),
        endpoint_ci_upper=float(upper[at]),
    )


def _clean(time: np.ndarray, event: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if not len(time) == len(event) == len(values):
        raise ValueError(f"lengths differ: time {len(time)}, event {len(event)}, score {len(values)}")
    bad = np.isnan(time) | np.isnan(event) | np.isnan(values)
    if bad.all():
        raise ConfigError("no subject has a follow-up time, an event flag and a risk score")
    return time[~bad], event[~bad].astype(np.int64), values[~bad]
