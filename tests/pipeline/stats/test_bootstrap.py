from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from pipeline.stats.bootstrap import bootstrap_metrics, resample_indices
from tests.pipeline.stats.conftest import make_scores


def _loop(labels, scores, units, indices, thresholds):
    """The plain per-resample sklearn loop on the given resample indices (units drawn per resample)."""
    rows_of = [np.flatnonzero(units == u) for u in range(units.max() + 1)]
    out = {"auroc": [], "auprc": [], "f1": []}
    for draw in indices:
        rows = np.concatenate([rows_of[u] for u in draw])
        values = {m: [] for m in out}
        for k in range(labels.shape[1]):
            y, s = labels[rows, k], scores[rows, k]
            keep = ~np.isnan(y)
            values["auroc"].append(roc_auc_score(y[keep], s[keep]))
            values["auprc"].append(average_precision_score(y[keep], s[keep]))
            values["f1"].append(f1_score(y[keep], s[keep] >= thresholds[k]))
        for m in out:
            out[m].append(values[m] + [np.mean(values[m])])
    return {m: np.array(v) for m, v in out.items()}


@pytest.mark.parametrize("cluster", [False, True])
@pytest.mark.parametrize("stratified", [False, True])
def test_replicates_equal_sklearn_loop_on_the_same_resamples(cluster, stratified):
    labels, scores, patients = make_scores(1, n=150, prevalences=(0.3, 0.2, 0.5))
    thresholds = np.array([0.5, 0.45, 0.6])
    clusters = patients if cluster else None
    result = bootstrap_metrics(
        labels,
        scores,
        clusters=clusters,
        thresholds=thresholds,
        n_resamples=40,
        seed=7,
        stratified=stratified,
        chunk_size=9,
    )
    units = np.unique(patients, return_inverse=True)[1] if cluster else np.arange(len(labels))
    strata = None
    if stratified:
        from pipeline.stats.bootstrap import _unit_strata

        strata = _unit_strata(labels, units, units.max() + 1)
    indices = np.concatenate(list(resample_indices(units.max() + 1, 40, seed=7, strata=strata, chunk_size=40)))
    expected = _loop(labels, scores, units, indices, thresholds)
    for metric, values in expected.items():
        np.testing.assert_allclose(result.replicates[metric], values, rtol=0, atol=1e-12)
        low, high = np.percentile(values, [2.5, 97.5], axis=0)
        np.testing.assert_allclose(result.ci_low[metric], low, atol=1e-12)
        np.testing.assert_allclose(result.ci_high[metric], high, atol=1e-12)


def test_seeded_and_independent_of_chunk_size():
    labels, scores, patients = make_scores(2)
    a = bootstrap_metrics(labels, scores, clusters=patients, n_resamples=50, seed=3, chunk_size=7)
    b = bootstrap_metrics(labels, scores, clusters=patients, n_resamples=50, seed=3, chunk_size=50)
    c = bootstrap_metrics(labels, scores, clusters=patients, n_resamples=50, seed=4)
    np.testing.assert_array_equal(a.replicates["auroc"], b.replicates["auroc"])
    assert not np.array_equal(a.replicates["auroc"], c.replicates["auroc"])


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_ci_agrees_with_scipy_bootstrap_within_monte_carlo_error(method):
    labels, scores, _ = make_scores(3, n=200, prevalences=(0.3,), missing=0.0, decimals=3)
    y, s = labels[:, 0], scores[:, 0]
    ours = bootstrap_metrics(y, s, n_resamples=3000, seed=0, ci_method=method)
    theirs = stats.bootstrap(
        (y, s),
        roc_auc_score,
        paired=True,
        vectorized=False,
        n_resamples=3000,
        method=method,
        rng=np.random.default_rng(1),
    ).confidence_interval
    assert ours.ci_low["auroc"][0] == pytest.approx(theirs.low, abs=0.012)
    assert ours.ci_high["auroc"][0] == pytest.approx(theirs.high, abs=0.012)
    assert ours.ci_high["auroc"][0] - ours.ci_low["auroc"][0] > 0.05


def test_macro_leaves_out_undefined_outputs_and_stratified_keeps_rare_positives():
    labels, scores, _ = make_scores(5, n=200, prevalences=(0.3, 0.2), missing=0.0)
    rare = np.zeros((200, 1))
    rare[[3, 50]] = 1
    empty = np.zeros((200, 1))
    labels = np.hstack([labels, rare, empty])
    scores = np.hstack([scores, np.linspace(0, 1, 200)[:, None], np.linspace(0, 1, 200)[:, None]])
    plain = bootstrap_metrics(labels, scores, n_resamples=200, seed=0)
    assert plain.defined.tolist() == [True, True, True, False]
    assert plain.estimates["auroc"][-1] == pytest.approx(np.mean(plain.estimates["auroc"][:3]), abs=1e-12)
    assert plain.n_undefined["auroc"][2] > 0  # some resamples drew neither positive of the rare output
    # The macro averages a fixed set of outputs: a resample without the rare output's positives has no macro.
    assert plain.n_undefined["auroc"][-1] == plain.n_undefined["auroc"][2] == plain.n_macro_dropped["auroc"]
    strat = bootstrap_metrics(labels, scores, n_resamples=200, seed=0, stratified=True)
    assert strat.n_undefined["auroc"][2] == 0
