from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, recall_score, roc_auc_score

from pipeline.stats.metrics import f1_optimal_thresholds, point_metrics
from tests.pipeline.stats.conftest import make_scores


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("decimals", [1, 2, 6])
def test_point_metrics_equal_sklearn(seed, decimals):
    labels, scores, _ = make_scores(seed, decimals=decimals)
    rng = np.random.default_rng(seed)
    thresholds = rng.choice(scores.ravel(), labels.shape[1])  # thresholds exactly at scores, ties included
    thresholds[0] = 0.4321  # between scores
    thresholds[1] = 2.0  # above every score: nothing called positive
    out = point_metrics(labels, scores, thresholds)
    for k in range(labels.shape[1]):
        keep = ~np.isnan(labels[:, k])
        y, s = labels[keep, k], scores[keep, k]
        called = s >= thresholds[k]
        assert out["auroc"][k] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert out["auprc"][k] == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert out["f1"][k] == pytest.approx(f1_score(y, called, zero_division=0), abs=1e-12)
        assert out["sensitivity"][k] == pytest.approx(recall_score(y, called), abs=1e-12)
        assert out["specificity"][k] == pytest.approx(recall_score(1 - y, ~called), abs=1e-12)
        assert out["prevalence"][k] == pytest.approx(y.mean(), abs=1e-12)
        assert out["n_pos"][k] == y.sum()


def test_output_without_positives_or_negatives_is_undefined():
    labels = np.array([[0, 1, 1], [0, 1, 0], [0, 1, np.nan], [0, 1, 1]], dtype=float)
    scores = np.array([[0.1, 0.2, 0.3], [0.5, 0.6, 0.1], [0.3, 0.1, 0.9], [0.2, 0.9, 0.8]])
    out = point_metrics(labels, scores, np.full(3, 0.5))
    assert np.isnan(out["auroc"][:2]).all() and np.isnan(out["auprc"][:2]).all() and np.isnan(out["f1"][:2]).all()
    assert out["prevalence"][:2].tolist() == [0.0, 1.0]
    assert out["auroc"][2] == 1.0


def test_f1_optimal_thresholds_maximise_f1():
    labels, scores, _ = make_scores(4)
    chosen = f1_optimal_thresholds(labels, scores)
    for k in range(labels.shape[1]):
        keep = ~np.isnan(labels[:, k])
        y, s = labels[keep, k], scores[keep, k]
        best = max(f1_score(y, s >= t) for t in np.unique(s))
        assert f1_score(y, s >= chosen[k]) == pytest.approx(best, abs=1e-12)


def test_build_levels_does_not_depend_on_the_order_of_tied_rows():
    """build_levels sorts with numpy's fast unstable sort: tied rows share a level row, so any order of them gives
    the same matrix (checked by shuffling the rows, units with them)."""
    from pipeline.stats.metrics import build_levels

    rng = np.random.default_rng(5)
    labels = (rng.random((300, 3)) < 0.3).astype(float)
    labels[rng.random(labels.shape) < 0.1] = np.nan
    scores = np.round(rng.normal(size=labels.shape) + np.nan_to_num(labels), 1)  # many ties
    units = rng.integers(0, 90, 300)
    order = rng.permutation(300)
    thresholds = np.array([0.2, 0.5, 1.0])
    one = build_levels(labels, scores, units=units, thresholds=thresholds, n_units=90)
    two = build_levels(labels[order], scores[order], units=units[order], thresholds=thresholds, n_units=90)
    for name in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(one.matrix, name), getattr(two.matrix, name))
    np.testing.assert_array_equal(one.offsets, two.offsets)
    np.testing.assert_array_equal(one.n_above, two.n_above)
