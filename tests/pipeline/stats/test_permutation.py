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


def _case(seed: int, n: int, decimals: int | None):
    """Labels with NaNs, an output without positives and one without negatives, tied or untied scores, patients."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 5)) < np.array([0.3, 0.1, 0.0, 1.0, 0.5])).astype(float)
    labels[rng.random(labels.shape) < 0.1] = np.nan
    scores_a = rng.normal(size=labels.shape) + np.nan_to_num(labels)
    scores_b = rng.normal(size=labels.shape) + 0.5 * np.nan_to_num(labels)
    if decimals is not None:
        scores_a, scores_b = np.round(scores_a, decimals), np.round(scores_b, decimals)
    return labels, scores_a, scores_b, rng.integers(0, n // 3, n)


def _plain_p_values(labels, scores_a, scores_b, groups, n_permutations, seed, rank):
    """The plain loop: each permutation's A' and B' scored by `ScoreLevels.metrics_from_sums` (every metric, the
    general code), hits counted with the test's rule."""
    from pipeline.stats.bootstrap import _units_of, _with_macro
    from pipeline.stats.metrics import binary_labels, build_levels

    labels = binary_labels(labels)
    if rank:
        scores_a, scores_b = rank_scores(labels, scores_a), rank_scores(labels, scores_b)
    units, n_units = _units_of(groups, len(labels))
    levels = build_levels(
        np.vstack([labels, labels]), np.vstack([scores_a, scores_b]), np.r_[units, units + n_units], n_units=2 * n_units
    )
    total = levels.sums(np.ones(2 * n_units))
    model_a = levels.sums(np.r_[np.ones(n_units), np.zeros(n_units)])
    observed_a, observed_b = levels.metrics_from_sums(model_a), levels.metrics_from_sums(total - model_a)
    defined = ~np.isnan(observed_a["auroc"][:, 0])
    swaps = np.random.default_rng(seed).random((n_permutations, n_units)) < 0.5
    sums = levels.sums(np.concatenate([~swaps, swaps], axis=1).T.astype(levels.dtype))
    perm_a, perm_b = levels.metrics_from_sums(sums), levels.metrics_from_sums(total - sums)
    p_values = {}
    for m in ("auroc", "auprc"):
        observed = _with_macro(observed_a[m].T, defined)[0] - _with_macro(observed_b[m].T, defined)[0]
        diff = _with_macro(perm_a[m].T, defined) - _with_macro(perm_b[m].T, defined)
        hits = (np.abs(diff) >= np.abs(observed) - 100 * np.finfo(np.float64).eps * np.abs(observed)).sum(axis=0)
        p_values[m] = (1 + hits) / (1 + n_permutations)
    return levels, total, sums, perm_a, perm_b, p_values


@pytest.mark.parametrize(
    "seed, n, decimals, grouped, rank",
    [(0, 60, 1, True, True), (1, 150, None, False, True), (2, 90, 2, True, False), (3, 45, 0, False, False)],
)
def test_the_permutation_loop_equals_the_plain_metrics_bit_for_bit(seed, n, decimals, grouped, rank):
    """The fast loop (`PairedLevels`: int64 running sums over every output, B' from the total) gives the general
    metrics' values bit for bit, hence the same p-values, whatever the product's chunk and the threads."""
    from pipeline.stats.permutation import PairedLevels

    labels, scores_a, scores_b, patients = _case(seed, n, decimals)
    groups = patients if grouped else None
    levels, total, sums, plain_a, plain_b, plain_p = _plain_p_values(labels, scores_a, scores_b, groups, 97, seed, rank)
    fast_a, fast_b = PairedLevels(levels, total).metrics(sums)
    for m in ("auroc", "auprc"):
        np.testing.assert_array_equal(fast_a[m], plain_a[m])
        np.testing.assert_array_equal(fast_b[m], plain_b[m])
    for chunk, workers in ((None, 1), (13, 3)):
        result = paired_permutation_test(
            labels, scores_a, scores_b, groups, 97, seed, rank=rank, chunk_size=chunk, workers=workers
        )
        for m in ("auroc", "auprc"):
            got = result.loc[result["metric"] == m, "p_value"].to_numpy()
            defined = ~np.isnan(got)
            np.testing.assert_array_equal(got[defined], plain_p[m][defined])
            assert np.isnan(got[[2, 3]]).all()  # no positive; no negative


def test_mid_ranks_equal_scipy_rankdata():
    from pipeline.stats.permutation import mid_ranks

    rng = np.random.default_rng(4)
    for values in (rng.normal(size=500), np.round(rng.normal(size=500), 1), np.ones(7), np.array([2.0])):
        np.testing.assert_array_equal(mid_ranks(values), stats.rankdata(values))
    assert np.isnan(mid_ranks(np.array([1.0, np.nan, 0.0]))).all()  # rankdata propagates NaN
