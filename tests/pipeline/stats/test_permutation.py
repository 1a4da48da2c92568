from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from pipeline.stats.permutation import paired_permutation_test, rank_scores
from tests.pipeline.stats.conftest import make_scores


def test_exact_p_value_equals_scipy_permutation_test():
    """scipy swaps the two models' ranks (each model's scores ranked first, as the test does)."""
    rng = np.random.default_rng(2)
    y = np.array([1, 0, 1, 0, 0, 1, 0, 1, 0.0])
    a = np.round(rng.random(9) + 0.3 * y, 1)
    b = np.round(rng.random(9), 1)
    result = paired_permutation_test(y, a, b, n_permutations=5000).set_index(["output", "metric"])
    rank_a, rank_b = stats.rankdata(a) / 9, stats.rankdata(b) / 9
    for metric, score in (("auroc", roc_auc_score), ("auprc", average_precision_score)):
        ref = stats.permutation_test(
            (rank_a, rank_b),
            lambda x, z, f=score: f(y, x) - f(y, z),
            permutation_type="samples",
            n_resamples=np.inf,
            vectorized=False,
        )
        row = result.loc[("0", metric)]
        assert row["exact"] and row["n_permutations"] == 2**9
        assert row["diff"] == pytest.approx(ref.statistic, abs=1e-12)
        assert row["p_value"] == pytest.approx(ref.pvalue, abs=1e-12)


def test_random_permutations_per_patient_equal_a_sklearn_loop():
    labels, scores_a, patients = make_scores(1, n=90, prevalences=(0.3, 0.4))
    scores_b = np.round(np.clip(scores_a + np.random.default_rng(9).normal(0, 0.15, scores_a.shape), 0, 1), 2)
    result = paired_permutation_test(labels, scores_a, scores_b, groups=patients, n_permutations=60, seed=5)
    units = np.unique(patients, return_inverse=True)[1]
    swaps = np.random.default_rng(5).random((60, units.max() + 1)) < 0.5

    def macro_diff(sa, sb, f):
        diffs = []
        for k in range(labels.shape[1]):
            keep = ~np.isnan(labels[:, k])
            diffs.append(f(labels[keep, k], sa[keep, k]) - f(labels[keep, k], sb[keep, k]))
        return np.array([*diffs, np.mean(diffs)])

    ranks_a, ranks_b = rank_scores(labels, scores_a), rank_scores(labels, scores_b)  # each model ranked first
    for metric, f in (("auroc", roc_auc_score), ("auprc", average_precision_score)):
        observed = macro_diff(scores_a, scores_b, f)
        hits = np.zeros(3)
        for swap in swaps:
            flip = swap[units][:, None]
            hits += np.abs(macro_diff(np.where(flip, ranks_b, ranks_a), np.where(flip, ranks_a, ranks_b), f)) >= (
                np.abs(observed) - 1e-12
            )
        rows = result[result["metric"] == metric]
        np.testing.assert_allclose(rows["diff"], observed, atol=1e-12)
        np.testing.assert_allclose(rows["p_value"], (1 + hits) / 61, atol=1e-12)
        assert (rows["p_value"] > 0).all()


def _simulated(rng, n, shift):
    y = (rng.random(n) < 0.4).astype(float)
    a = rng.normal(y * (1.0 + shift), 1.0)
    b = rng.normal(y * 1.0, 1.0)
    return y, a, b


def test_null_rejects_at_about_alpha_and_planted_difference_nearly_always():
    rng = np.random.default_rng(0)
    reps = 150
    null_p = [
        paired_permutation_test(*_simulated(rng, 60, 0.0), n_permutations=199, seed=s, metrics=("auroc",))["p_value"][0]
        for s in range(reps)
    ]
    rejections = int((np.array(null_p) <= 0.05).sum())
    # Binomial(150, 0.05): mean 7.5; P(X <= 1) and P(X >= 16) are both below 0.005.
    assert 2 <= rejections <= 15, rejections
    planted = [
        paired_permutation_test(*_simulated(rng, 200, 2.0), n_permutations=199, seed=s, metrics=("auroc",))["p_value"][
            0
        ]
        for s in range(20)
    ]
    assert (np.array(planted) <= 0.05).sum() >= 19
