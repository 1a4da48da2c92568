"""DeLong's test for two correlated AUROCs on the same images (Sun & Xu 2014 fast algorithm).

An analytic cross-check of the permutation test for one AUROC difference: the variance of each AUROC and
their covariance come from the structural components V10 (per positive) and V01 (per negative), which Sun &
Xu compute from three mid-rank vectors in O(n log n) instead of DeLong's O(n_pos * n_neg) pairs. It is in
neither scipy nor statsmodels. It treats images as independent: with several images per patient prefer the
per-patient permutation test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from pipeline.stats.metrics import binary_labels


@dataclass(frozen=True)
class DeLongResult:
    """AUROC of each model, their difference (a - b), its standard error, z statistic and two-sided p-value."""

    auroc_a: float
    auroc_b: float
    diff: float
    se: float
    z: float
    p_value: float


def auroc_variance(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """AUROC of one model and DeLong's estimate of its variance."""
    aucs, cov = _delong_covariance(labels, np.asarray(scores, dtype=np.float64)[None, :])
    return float(aucs[0]), float(cov[0, 0])


def delong_test(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> DeLongResult:
    """DeLong's test of AUROC(a) == AUROC(b) for two models scored on the same images (NaN and -1 labels
    dropped, as everywhere in pipeline.stats)."""
    labels = binary_labels(labels)[:, 0]
    keep = ~np.isnan(labels)
    aucs, cov = _delong_covariance(labels[keep], np.vstack([np.asarray(scores_a)[keep], np.asarray(scores_b)[keep]]))
    diff = aucs[0] - aucs[1]
    variance = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    if not np.isfinite(variance) or variance <= 0:
        z, p = (np.nan, np.nan) if diff != 0 or not np.isfinite(variance) else (0.0, 1.0)
        return DeLongResult(aucs[0], aucs[1], diff, float(np.sqrt(max(variance, 0.0))), z, p)
    se = float(np.sqrt(variance))
    z = diff / se
    return DeLongResult(float(aucs[0]), float(aucs[1]), float(diff), se, float(z), float(2 * stats.norm.sf(abs(z))))


def _delong_covariance(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs (R,) and their DeLong covariance (R, R) for scores (R, n) of R models (Sun & Xu 2014, alg. 1)."""
    positive = np.asarray(labels) > 0.5
    m, n = int(positive.sum()), int((~positive).sum())
    if m < 2 or n < 2:
        nan = np.full(scores.shape[0], np.nan)
        return nan, np.full((scores.shape[0],) * 2, np.nan)
    x, y = scores[:, positive], scores[:, ~positive]
    tx = stats.rankdata(x, axis=1)  # mid-ranks (average ranks on ties)
    ty = stats.rankdata(y, axis=1)
    tz = stats.rankdata(np.hstack([x, y]), axis=1)
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return aucs, s10 / m + s01 / n
