"""Issue 14's statistics defects: uncertain (-1) labels, the macro CI over a fixed set of findings, the risk
threshold moved as a rate, per-SD hazard ratios with the sample SD, and the permutation test on different scales."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.datasets import load_rossi
from scipy import stats
from sklearn.metrics import roc_auc_score

from pipeline.stats import bootstrap_metrics, delong_test, evaluate_predictions, evaluate_survival, point_metrics
from pipeline.stats.permutation import paired_permutation_test
from tests.pipeline.stats.conftest import make_scores, predictions_frame


def _uncertain(seed=3):
    labels, scores, patients = make_scores(seed, n=200, prevalences=(0.3, 0.4))
    uncertain = labels.copy()
    rng = np.random.default_rng(seed)
    uncertain[(rng.random(labels.shape) < 0.15) & ~np.isnan(labels)] = -1.0
    masked = np.where(uncertain == -1, np.nan, uncertain)
    return uncertain, masked, scores, patients


def test_uncertain_labels_are_masked_the_same_way_in_every_library_call():
    uncertain, masked, scores, patients = _uncertain()
    got, want = point_metrics(uncertain, scores), point_metrics(masked, scores)
    for metric in ("auroc", "auprc", "prevalence"):
        np.testing.assert_array_equal(got[metric], want[metric])
    keep = ~np.isnan(masked[:, 0])
    assert got["auroc"][0] == pytest.approx(roc_auc_score(masked[keep, 0], scores[keep, 0]), abs=1e-12)
    boot = bootstrap_metrics(uncertain, scores, clusters=patients, n_resamples=30, seed=1)
    ref = bootstrap_metrics(masked, scores, clusters=patients, n_resamples=30, seed=1)
    np.testing.assert_array_equal(boot.estimates["auroc"], ref.estimates["auroc"])
    np.testing.assert_array_equal(boot.ci_low["auroc"], ref.ci_low["auroc"])
    other = np.clip(scores + np.random.default_rng(0).normal(0, 0.2, scores.shape), 0, 1)
    perm = paired_permutation_test(uncertain, scores, other, n_permutations=50, seed=2)
    perm_ref = paired_permutation_test(masked, scores, other, n_permutations=50, seed=2)
    pd.testing.assert_frame_equal(perm, perm_ref)
    d = delong_test(uncertain[:, 0], scores[:, 0], other[:, 0])
    d_ref = delong_test(masked[:, 0], scores[:, 0], other[:, 0])
    assert (d.auroc_a, d.p_value) == (d_ref.auroc_a, d_ref.p_value)
    with pytest.raises(ValueError, match="labels must be 1, 0, -1"):
        point_metrics(np.where(uncertain == 1, 2.0, uncertain), scores)


def test_macro_note_counts_resamples_without_a_rare_finding_and_keeps_the_finding_set():
    rng = np.random.default_rng(4)
    n = 150
    labels = np.stack([(rng.random(n) < 0.4), np.zeros(n, bool)], axis=1).astype(float)
    labels[:2, 1] = 1.0  # a finding with two test positives: many resamples hold none
    scores = np.clip(rng.normal(0.4 + 0.3 * labels, 0.2), 0, 1)
    frame = predictions_frame(labels, scores, np.arange(n))
    results = evaluate_predictions(frame, n_resamples=200, cluster_column=None).set_index(["output", "metric"])
    note = results.loc[("macro", "auroc"), "note"]
    assert "mean over 2 of 2 outputs" in note
    assert "resamples left out of the macro CI" in note and "finding_1 (2 test positives)" in note
    boot = bootstrap_metrics(labels, scores, n_resamples=200, seed=0)
    dropped = int(boot.n_macro_dropped["auroc"])
    assert 0.5 * 200 * (1 - 2 / n) ** n < dropped < 2 * 200 * (1 - 2 / n) ** n + 20  # about P(no positive drawn)
    assert f"{dropped} of 200 resamples" in note


def _rossi_survival(val_scale: float | None = None) -> pd.DataFrame:
    rossi = load_rossi()
    risk = rossi["prio"].to_numpy(float) + 1e-4 * np.arange(len(rossi))  # no ties
    frame = pd.DataFrame(
        {
            "patient_id": np.arange(len(rossi)),
            "split": "test",
            "endpoint": "arrest",
            "risk_score": risk,
            "time": rossi["week"].to_numpy(float),
            "event": rossi["arrest"].to_numpy(float),
        }
    )
    if val_scale is None:
        return frame
    val = frame.iloc[:200].assign(split="val", patient_id=lambda f: f["patient_id"] + 10_000)
    val["risk_score"] = val_scale * val["risk_score"] + 50.0  # another head, another scale
    return pd.concat([frame, val], ignore_index=True)


def test_validation_rows_of_another_scale_do_not_move_the_test_median():
    results = evaluate_survival(_rossi_survival(val_scale=100.0)).set_index("metric")
    low, high = results.loc["survival_low_risk"], results.loc["survival_high_risk"]
    n_test = len(load_rossi())
    assert abs(low["n"] - high["n"]) <= 2 and low["n"] + high["n"] == n_test  # half the test subjects each
    assert "median risk on test" in results.loc["logrank_p", "note"]  # issue 25: one declared rule


def test_hazard_ratio_per_sd_uses_the_sample_sd():
    survival = _rossi_survival()
    results = evaluate_survival(survival).set_index("metric")
    risk = survival["risk_score"].to_numpy()
    frame = pd.DataFrame(
        {"time": survival["time"], "event": survival["event"], "x": (risk - risk.mean()) / risk.std(ddof=1)}
    )
    ref = CoxPHFitter().fit(frame, "time", "event").summary.loc["x"]
    assert results.loc["hazard_ratio_per_sd", "estimate"] == pytest.approx(ref["exp(coef)"], rel=1e-6)
    assert results.loc["hazard_ratio_per_sd", "ci_low"] == pytest.approx(ref["exp(coef) lower 95%"], rel=1e-6)


def simulate(rng, n_sets: int, n: int, effect: float, transform) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`n_sets` independent test sets as columns: labels (n, n_sets), scores of A and B. Both models see the same
    latent signal with their own noise; A's signal is stronger by `effect`; B's scores pass through `transform`."""
    y = (rng.random((n, n_sets)) < 0.3).astype(float)
    shared = rng.normal(size=(n, n_sets))
    a = y * (1.0 + effect) + 0.7 * shared + rng.normal(size=(n, n_sets))
    b = y * 1.0 + 0.7 * shared + rng.normal(size=(n, n_sets))
    return y, a, transform(b)


SCALE = lambda b: 10.0 * b + 5.0  # noqa: E731  another backbone's score scale
SHAPE = lambda b: np.exp(2.0 * b)  # noqa: E731  another shape (skewed), same order


def rejection_rates(rng, n_sets, n, effect, transform, n_permutations=199) -> tuple[float, float]:
    """(permutation test, DeLong) rejection rates at 0.05 over `n_sets` simulated test sets (one call each)."""
    y, a, b = simulate(rng, n_sets, n, effect, transform)
    table = paired_permutation_test(y, a, b, n_permutations=n_permutations, seed=1, metrics=("auroc",))
    p_perm = table.loc[table["output"] != "macro", "p_value"].to_numpy()
    p_delong = np.array([delong_test(y[:, k], a[:, k], b[:, k]).p_value for k in range(n_sets)])
    return float(np.mean(p_perm <= 0.05)), float(np.mean(p_delong <= 0.05))


@pytest.mark.parametrize("transform", [SCALE, SHAPE], ids=["different scale", "different shape"])
def test_permutation_null_rate_is_alpha_when_score_scales_differ(transform):
    null, _ = rejection_rates(np.random.default_rng(11), n_sets=600, n=120, effect=0.0, transform=transform)
    # Binomial(600, 0.05): sd 0.009; raw-score swapping gave 0.018 (scale) and 0.002 (shape).
    assert stats.binomtest(round(null * 600), 600, 0.05).pvalue > 0.001, null


def test_permutation_power_matches_delong_when_score_scales_differ():
    power, delong = rejection_rates(np.random.default_rng(12), n_sets=600, n=120, effect=0.6, transform=SCALE)
    assert power > 0.3 and abs(power - delong) <= 0.03, (power, delong)
