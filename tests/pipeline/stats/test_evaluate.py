from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_rossi
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from pipeline.errors import PredictionsError
from pipeline.stats.evaluate import RESULT_COLUMNS, compare_predictions, evaluate_predictions, evaluate_survival
from tests.pipeline.stats.conftest import make_scores, predictions_frame


@pytest.fixture
def run():
    labels, scores, patients = make_scores(0, n=200)
    labels[:, 3] = 0.0  # an output with no positive test label
    test = predictions_frame(labels, scores, patients)
    v_labels, v_scores, v_patients = make_scores(1, n=120)
    val = predictions_frame(v_labels, v_scores, v_patients + 1000, split="val")
    return pd.concat([test, val], ignore_index=True), labels, scores, (v_labels, v_scores)


def test_quantile_transfer_keeps_the_validation_positive_rate_on_another_models_scale(run):
    frame, labels, scores, (v_labels, v_scores) = run
    test = frame[frame["split"] == "test"].copy()
    test["score"] = 0.2 * test["score"] - 0.5  # the refit head's scale: every val threshold lies above it
    val = frame[frame["split"] == "val"]
    by_score = evaluate_predictions(test, n_resamples=10, val_predictions=val).set_index(["output", "metric"])
    moved = evaluate_predictions(test, n_resamples=10, val_predictions=val, threshold_transfer="quantile")
    moved = moved.set_index(["output", "metric"])
    shifted = 0.2 * scores - 0.5
    for k in range(3):
        v_keep = ~np.isnan(v_labels[:, k])
        vy, vs = v_labels[v_keep, k], v_scores[v_keep, k]
        t = max(np.unique(vs), key=lambda c: (round(f1_score(vy, vs >= c), 12), c))
        rate = np.mean(v_scores[:, k] >= t)
        s = shifted[:, k]
        cut = np.quantile(s, 1 - rate, method="higher")
        assert np.mean(s > cut) - 1 / len(s) <= rate <= np.mean(s >= cut) + 1 / len(s)  # ties move whole
        keep = ~np.isnan(labels[:, k])
        assert moved.loc[(f"finding_{k}", "f1"), "estimate"] == pytest.approx(
            f1_score(labels[keep, k], s[keep] >= cut), abs=1e-12
        )
        assert "the same rate on test" in moved.loc[(f"finding_{k}", "f1"), "note"]
        assert by_score.loc[(f"finding_{k}", "sensitivity"), "estimate"] == 0.0  # the raw score calls no one
    with pytest.raises(Exception, match="threshold_transfer"):
        evaluate_predictions(test, n_resamples=10, threshold_transfer="rank")


def test_results_schema_values_and_macro(run):
    frame, labels, scores, (v_labels, v_scores) = run
    results = evaluate_predictions(frame, n_resamples=100, seed=1)
    assert list(results.columns) == list(RESULT_COLUMNS)
    assert (results[["dataset", "backbone", "head"]] == ["syn", "vit_s", "linear"]).all().all()
    assert (results["label_fraction"] == 1.0).all()
    table = results.set_index(["output", "metric"])
    for k in range(3):
        keep = ~np.isnan(labels[:, k])
        y, s = labels[keep, k], scores[keep, k]
        row = table.loc[(f"finding_{k}", "auroc")]
        assert row["estimate"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert row["ci_low"] < row["estimate"] < row["ci_high"]
        assert row["n"] == keep.sum() and row["n_pos"] == y.sum() and row["defined"]
        assert table.loc[(f"finding_{k}", "auprc"), "estimate"] == pytest.approx(
            average_precision_score(y, s), abs=1e-12
        )
        # F1 at the F1-optimal threshold of the validation rows, never of the test rows.
        v_keep = ~np.isnan(v_labels[:, k])
        vy, vs = v_labels[v_keep, k], v_scores[v_keep, k]
        t = max(np.unique(vs), key=lambda c: (round(f1_score(vy, vs >= c), 12), c))  # ties: highest
        assert table.loc[(f"finding_{k}", "f1"), "estimate"] == pytest.approx(f1_score(y, s >= t), abs=1e-12)
        assert "F1-optimal on validation" in table.loc[(f"finding_{k}", "f1"), "note"]
    undefined = table.loc[("finding_3", "auroc")]
    assert not undefined["defined"] and np.isnan(undefined["estimate"]) and "no positive" in undefined["note"]
    macro = table.loc[("macro", "auroc")]
    assert macro["estimate"] == pytest.approx(
        np.mean([table.loc[(f"finding_{k}", "auroc"), "estimate"] for k in range(3)])
    )
    assert "mean over 3 of 4 outputs" in macro["note"] and "finding_3" in macro["note"]
    assert "patient_id" in macro["note"]
    assert not results.loc[results["output"] == "macro", "estimate"].isna().any()


def test_given_thresholds_by_image_and_bca(run):
    frame, labels, scores, _ = run
    thresholds = {f"finding_{k}": 0.5 for k in range(4)}
    results = evaluate_predictions(frame, n_resamples=50, cluster_column=None, thresholds=thresholds, ci_method="bca")
    row = results.set_index(["output", "metric"]).loc[("finding_0", "f1")]
    keep = ~np.isnan(labels[:, 0])
    assert row["estimate"] == pytest.approx(f1_score(labels[keep, 0], scores[keep, 0] >= 0.5), abs=1e-12)
    assert "by image" in row["note"] and "bca" in row["note"]


def test_bad_tables_raise_clear_errors(run):
    frame = run[0]
    with pytest.raises(PredictionsError, match="duplicate"):
        evaluate_predictions(pd.concat([frame, frame.iloc[:1]]), n_resamples=10)
    with pytest.raises(PredictionsError, match="lacks columns"):
        evaluate_predictions(frame.drop(columns="score"), n_resamples=10)
    mixed = frame.copy()
    mixed.loc[:5, "backbone"] = "other"
    with pytest.raises(PredictionsError, match="evaluate one run at a time"):
        evaluate_predictions(mixed, n_resamples=10)
    odd = frame.copy()
    odd.loc[0, "label"] = 2.0
    with pytest.raises(PredictionsError, match="uncertain"):
        evaluate_predictions(odd, n_resamples=10)
    uncertain, masked = frame.copy(), frame.copy()
    uncertain.loc[:40:3, "label"] = -1.0  # masked like NaN, as in every library call
    masked.loc[:40:3, "label"] = np.nan
    want = evaluate_predictions(masked, n_resamples=10)
    pd.testing.assert_frame_equal(evaluate_predictions(uncertain, n_resamples=10), want)


def test_compare_predictions_aligns_and_refuses_other_images(run):
    frame = run[0]
    other = frame.sample(frac=1.0, random_state=0).copy()  # same rows, another order
    other["backbone"] = "vit_b"
    rng = np.random.default_rng(0)
    other["score"] = np.clip(other["score"] + rng.normal(0, 0.3, len(other)), 0, 1)
    result = compare_predictions(frame, other, n_permutations=99)
    macro = result.set_index(["output", "metric"]).loc[("macro", "auroc")]
    assert macro["diff"] > 0 and macro["p_value"] <= 0.05
    assert result["model_b"].iloc[0] == "vit_b/linear"
    assert result.loc[result["metric"] == "auroc", "delong_p"].notna().sum() == 3
    per_output = result[(result["metric"] == "auroc") & (result["output"] != "macro")].dropna(subset=["p_value"])
    assert (per_output["p_adjusted"] >= per_output["p_value"]).all()
    with pytest.raises(PredictionsError, match="not scored on the same test images"):
        compare_predictions(frame, other.iloc[8:])


def test_evaluate_survival_rows():
    rossi = load_rossi()
    survival = pd.DataFrame(
        {
            "dataset": "rossi",
            "backbone": "none",
            "head": "prio",
            "label_fraction": 1.0,
            "patient_id": np.arange(len(rossi)),
            "split": "test",
            "endpoint": "arrest",
            "risk_score": rossi["prio"].to_numpy(float),
            "time": rossi["week"].to_numpy(float),
            "event": rossi["arrest"].to_numpy(float),
        }
    )
    results = evaluate_survival(survival, horizons=[26.0]).set_index("metric")
    assert set(results.index) >= {"logrank_p", "hazard_ratio", "c_index", "survival_low_risk", "survival_high_risk"}
    assert results.loc["logrank_p", "estimate"] < 0.01
    assert (
        results.loc["hazard_ratio", "ci_low"]
        < results.loc["hazard_ratio", "estimate"]
        < results.loc["hazard_ratio", "ci_high"]
    )
    assert results.loc["survival_high_risk", "estimate"] < results.loc["survival_low_risk", "estimate"]
    assert "median risk on test" in results.loc["logrank_p", "note"]
    assert results.loc["td_auroc_26y", "defined"]
    given = evaluate_survival(survival, grouping=4.0).set_index("metric")
    assert "score > 4" in given.loc["logrank_p", "note"]
    # A threshold above every score leaves one group empty: the grouped metrics are undefined, but the
    # threshold-free ones (C-index, HR per SD) are still the reference values.
    above = evaluate_survival(survival, grouping=1e9).set_index("metric")
    assert not above.loc["logrank_p", "defined"] and "one group" in above.loc["logrank_p", "note"]
    assert np.isnan(above.loc["survival_high_risk", "estimate"])
    assert above.loc["c_index", "estimate"] == pytest.approx(results.loc["c_index", "estimate"])
    assert above.loc["hazard_ratio_per_sd", "estimate"] == pytest.approx(results.loc["hazard_ratio_per_sd", "estimate"])


def test_hazard_ratio_is_undefined_when_a_risk_group_has_no_events():
    n = 40
    risk = np.linspace(0.0, 1.0, n)
    survival = pd.DataFrame(
        {
            "dataset": "toy",
            "backbone": "none",
            "head": "risk",
            "label_fraction": 1.0,
            "patient_id": np.arange(n),
            "split": "test",
            "endpoint": "death",
            "risk_score": risk,
            "time": np.linspace(1.0, 10.0, n),
            "event": (risk > 0.6).astype(float),  # every death is in the high-risk half
        }
    )
    results = evaluate_survival(survival).set_index("metric")
    hr = results.loc["hazard_ratio"]
    assert not hr["defined"] and "no events in the low-risk group" in hr["note"]
    assert results.loc["logrank_p", "defined"] and results.loc["c_index", "defined"]
