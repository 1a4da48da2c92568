from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from pipeline.stats.delong import auroc_variance, delong_test


def _naive_delong(y, scores):
    """DeLong et al. (1988) structural components by explicit pairs: O(n_pos * n_neg)."""
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)
    cov = np.atleast_2d(np.cov(v10)) / pos.shape[1] + np.atleast_2d(np.cov(v01)) / neg.shape[1]
    return psi.mean(axis=(1, 2)), cov


def test_fast_delong_equals_explicit_pairs_and_sklearn():
    rng = np.random.default_rng(0)
    y = (rng.random(150) < 0.35).astype(float)
    a = np.round(rng.normal(y, 1.0), 1)
    b = np.round(rng.normal(0.5 * y, 1.0), 1)
    aucs, cov = _naive_delong(y, np.vstack([a, b]))
    result = delong_test(y, a, b)
    assert result.auroc_a == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert result.auroc_b == pytest.approx(aucs[1], abs=1e-12)
    se = np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert result.se == pytest.approx(se, rel=1e-10)
    assert result.p_value == pytest.approx(2 * stats.norm.sf(abs(aucs[0] - aucs[1]) / se), rel=1e-10)
    auc, var = auroc_variance(y, a)
    assert auc == pytest.approx(aucs[0], abs=1e-12)
    assert var == pytest.approx(cov[0, 0], rel=1e-10)


def test_identical_models_give_p_one_and_nan_labels_are_dropped():
    y = np.array([1, 0, 1, 0, np.nan, 1, 0])
    s = np.array([0.9, 0.1, 0.8, 0.3, 0.5, 0.2, 0.4])
    result = delong_test(y, s, s)
    assert result.diff == 0 and result.p_value == 1.0
