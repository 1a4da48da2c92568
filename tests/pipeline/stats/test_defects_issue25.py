"""Issue 25's statistics defects: the macro over a fixed set of findings, one declared survival threshold rule,
honest small-sample intervals, the permutation test's attainable p, a clustered DeLong test, complete-case horizon
AUROC and multiplicity in the captions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.runs import StatsConfig, evaluate_tables
from tests.pipeline.stats.conftest import make_scores, predictions_frame


def _macro(results: pd.DataFrame, metric: str = "auroc") -> pd.Series:
    return results[(results["output"] == "macro") & (results["metric"] == metric)].iloc[0]


def _row(results: pd.DataFrame, output: str, metric: str = "auroc") -> pd.Series:
    return results[(results["output"] == output) & (results["metric"] == metric)].iloc[0]


def test_a_finding_without_train_positives_stays_in_the_macro_of_a_label_fraction_run():
    """The label-efficiency artefact: the 25% run lost Edema (test positives, no train positives) from its macro,
    so its macro averaged another set of findings than the 100% run's and looked better."""
    labels, scores, patients = make_scores(4, n=160, prevalences=(0.3, 0.2, 0.4), missing=0.0)
    outputs = ["Atelectasis", "Edema", "Effusion"]
    config = StatsConfig(n_resamples=40)
    full = evaluate_tables(predictions_frame(labels, scores, patients, outputs=outputs), None, None, {}, config)
    # The 25% head never saw an Edema positive; whatever it scores, the finding stays in the macro.
    partial = predictions_frame(labels, scores[:, [0, 2, 2]] * 0.5, patients, outputs=outputs, label_fraction=0.25)
    frac = evaluate_tables(partial, None, None, {"Edema": "no positive labels"}, config)

    edema = _row(frac, "Edema")
    assert edema["defined"] and edema["estimate"] == 0.5  # scored by its training prior, a constant
    assert "training prior" in edema["note"]
    for results in (full, frac):
        assert _macro(results)["note"].startswith("mean over 3 of 3 outputs")
    want = np.mean([_row(frac, o)["estimate"] for o in outputs])
    assert _macro(frac)["estimate"] == pytest.approx(want, abs=1e-12)
    assert "Edema" in _macro(frac)["note"] and "training prior" in _macro(frac)["note"]
    # Every finding of the set is the same in both runs: the macros differ only by the findings' own AUROCs.
    keep = ~np.isnan(labels[:, 1])
    assert _row(full, "Edema")["estimate"] == pytest.approx(roc_auc_score(labels[keep, 1], scores[keep, 1]))


def test_the_survival_risk_threshold_is_the_test_median_whatever_else_the_table_holds():
    """One declared rule, the paper's: the test cohort is split at its own median predicted risk. Validation rows
    in the table (another head's scale) no longer move the cut, and the note says what was done."""
    from lifelines.datasets import load_rossi

    from pipeline.stats import evaluate_survival, risk_groups

    rossi = load_rossi()
    test = pd.DataFrame(
        {
            "patient_id": np.arange(len(rossi)),
            "split": "test",
            "endpoint": "arrest",
            "risk_score": rossi["prio"].to_numpy(float) + 1e-4 * np.arange(len(rossi)),
            "time": rossi["week"].to_numpy(float),
            "event": rossi["arrest"].to_numpy(float),
        }
    )
    val = test.iloc[:100].assign(split="val", patient_id=lambda f: f["patient_id"] + 10_000)
    val["risk_score"] = np.linspace(0.0, 1.0, 100) ** 4  # skewed: its median rate is not one half
    both = pd.concat([test, val], ignore_index=True)
    _, threshold, source = risk_groups(both, "arrest")
    assert threshold == pytest.approx(np.median(test["risk_score"])) and source == "median risk on test"
    results = evaluate_survival(both).set_index("metric")
    assert "median risk on test" in results.loc["logrank_p", "note"]
    assert results.loc["survival_low_risk", "n"] == (test["risk_score"] <= threshold).sum()


def test_a_permutation_test_over_four_patients_says_p_cannot_fall_below_one_eighth():
    from pipeline.report.tables import permutation_phrase
    from pipeline.stats import compare_predictions

    labels, scores, _ = make_scores(5, n=12, prevalences=(0.5,), missing=0.0)
    labels[:4, 0] = [1, 0, 1, 0]
    patients = np.repeat(np.arange(4), 3)
    other = np.clip(scores + np.random.default_rng(1).normal(0, 0.3, scores.shape), 0, 1)
    a = predictions_frame(labels, scores, patients, head="linear")
    b = predictions_frame(labels, other, patients, head="mlp")
    result = compare_predictions(a, b, n_permutations=1000)
    macro = result[(result["output"] == "macro") & (result["metric"] == "auroc")].iloc[0]
    assert macro["exact"] and macro["n_permutations"] == 16 and macro["n_units"] == 4
    assert macro["min_p"] == 0.125 and macro["p_value"] >= 0.125
    comparisons = pd.DataFrame(
        {"dataset": ["jsrt", "shenzhen"], "n_permutations": [16, 1000], "exact": [True, False], "min_p": [0.125, 1e-3]}
    )
    phrase = permutation_phrase(comparisons, 1000)
    assert "all 16 swap patterns of its 4 test patients" in phrase and "p is at least 0.125" in phrase
    assert "1000 random permutations" in phrase


def _obuchowski_direct(labels, scores_a, scores_b, clusters):
    """Obuchowski (1997) from the pairwise kernel psi(x, y) over every positive x and negative y, by loops."""
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    m, n = len(pos), len(neg)
    ids = np.unique(clusters)
    out = []
    for s in (scores_a, scores_b):
        psi = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
        auc = psi.mean()
        v10 = {c: psi[clusters[pos] == c].mean(axis=1).sum() if (clusters[pos] == c).any() else 0.0 for c in ids}
        v01 = {c: psi[:, clusters[neg] == c].mean(axis=0).sum() if (clusters[neg] == c).any() else 0.0 for c in ids}
        m_i = {c: (clusters[pos] == c).sum() for c in ids}
        n_i = {c: (clusters[neg] == c).sum() for c in ids}
        out.append(
            (auc, np.array([v10[c] - m_i[c] * auc for c in ids]), np.array([v01[c] - n_i[c] * auc for c in ids]))
        )
    k = len(ids)
    cov = np.zeros((2, 2))
    for r in range(2):
        for t in range(2):
            s10 = k / ((k - 1) * m) * (out[r][1] * out[t][1]).sum()
            s01 = k / ((k - 1) * n) * (out[r][2] * out[t][2]).sum()
            s11 = k / (k - 1) * ((out[r][1] * out[t][2]).sum() + (out[t][1] * out[r][2]).sum())
            cov[r, t] = s10 / m + s01 / n + s11 / (m * n)
    return out[0][0] - out[1][0], cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]


def _clustered_null(rng, n_patients=50, per_patient=4):
    """Two exchangeable models on 50 patients x 4 images; each model's error is shared by a patient's images."""
    y = np.repeat(rng.random(n_patients) < 0.4, per_patient).astype(float)
    clusters = np.repeat(np.arange(n_patients), per_patient)
    latent = np.repeat(rng.normal(size=n_patients), per_patient) + y
    a = latent + np.repeat(rng.normal(size=n_patients), per_patient) + 0.3 * rng.normal(size=len(y))
    b = latent + np.repeat(rng.normal(size=n_patients), per_patient) + 0.3 * rng.normal(size=len(y))
    return y, a, b, clusters


def test_clustered_delong_equals_obuchowski_by_hand_and_holds_its_level_under_the_null():
    from pipeline.stats import delong_test

    rng = np.random.default_rng(7)
    y, a, b, clusters = _clustered_null(rng, n_patients=20, per_patient=3)
    y[::7] = 1 - y[::7]  # a few patients with both classes
    a = np.round(a, 1)  # ties
    diff, variance = _obuchowski_direct(y, a, b, clusters)
    got = delong_test(y, a, b, clusters=clusters)
    assert got.diff == pytest.approx(diff, abs=1e-12) and got.se**2 == pytest.approx(variance, rel=1e-10)
    rejections = {"plain": 0, "clustered": 0}
    for _ in range(300):
        y, a, b, clusters = _clustered_null(rng)
        rejections["plain"] += delong_test(y, a, b).p_value < 0.05
        rejections["clustered"] += delong_test(y, a, b, clusters=clusters).p_value < 0.05
    assert rejections["plain"] / 300 > 0.15  # images taken as independent: far above the level
    assert rejections["clustered"] / 300 < 0.09  # 0.05 within simulation error (SE 0.013)


def test_compare_prints_the_clustered_delong_for_several_images_per_patient():
    from pipeline.stats import compare_predictions, delong_test

    y, a, b, clusters = _clustered_null(np.random.default_rng(2))
    pa = predictions_frame(y[:, None], a[:, None], clusters, head="linear")
    pb = predictions_frame(y[:, None], b[:, None], clusters, head="mlp")
    result = compare_predictions(pa, pb, n_permutations=20)
    row = result[(result["output"] == "finding_0") & (result["metric"] == "auroc")].iloc[0]
    assert row["delong_p"] == pytest.approx(delong_test(y, a, b, clusters=clusters).p_value)
    assert "Obuchowski" in row["note"]


def test_no_zero_width_interval_on_a_handful_of_positives_and_no_bold_without_one():
    from pipeline.report.cells import Cell, mark_best
    from pipeline.report.tables import result_cell
    from pipeline.stats import evaluate_predictions

    # The tiny demo's oracle: 3 positives of 13 perfectly separated printed 1.000 (1.000-1.000); CVD's one
    # positive printed 0.000 (0.000-0.000) after a third of the resamples had no positive and were dropped.
    y = np.zeros((13, 2))
    y[:3, 0] = 1
    y[12, 1] = 1
    scores = np.column_stack([y[:, 0] + 0.01 * np.arange(13), 1.0 - y[:, 1] + 0.01 * np.arange(13)])
    results = evaluate_predictions(predictions_frame(y, scores, np.arange(13)), n_resamples=200)
    for output, want in (("finding_0", 1.0), ("finding_1", 0.0)):
        row = _row(results, output)
        assert row["estimate"] == want and np.isnan(row["ci_low"]) and np.isnan(row["ci_high"])
        assert "no CI, too few" in row["note"] and "fewer than 8" in row["note"]
        cell = result_cell(results, "auroc", output)
        assert cell.display() == f"{want:.3f}" and cell.ci_withheld and "fewer than 8" in cell.note
    # Enough positives but a perfect separation: every resample says 1, a zero-width CI is not shown either.
    y = np.r_[np.ones(20), np.zeros(20)][:, None]
    perfect = evaluate_predictions(predictions_frame(y, y + 0.001 * np.arange(40)[:, None], np.arange(40)))
    assert (
        np.isnan(_row(perfect, "finding_0")["ci_low"])
        and "every resample gives 1" in _row(perfect, "finding_0")["note"]
    )
    # A best whose CI is withheld is not bold; the best of the rest is.
    cells = mark_best([Cell(1.0, ci_withheld=True, note="no CI"), Cell(0.8, 0.7, 0.9), Cell(0.7, 0.6, 0.8)])
    assert [c.bold for c in cells] == [False, True, False]


def test_the_faster_permutation_loop_gives_the_same_metrics_and_p_values_whatever_the_workers():
    from pipeline.stats.metrics import build_levels
    from pipeline.stats.permutation import PairedLevels, paired_permutation_test

    labels, scores, patients = make_scores(11, n=300)
    other = np.clip(scores + np.random.default_rng(3).normal(0, 0.2, scores.shape), 0, 1)
    units = np.unique(patients, return_inverse=True)[1]
    n_units = units.max() + 1
    levels = build_levels(np.vstack([labels, labels]), np.vstack([scores, other]), np.r_[units, units + n_units])
    swaps = np.random.default_rng(0).random((7, n_units)) < 0.5
    sums = levels.sums(np.concatenate([~swaps, swaps], axis=1).T.astype(levels.dtype))
    total = levels.sums(np.ones(2 * n_units))
    fast_a, fast_b = PairedLevels(levels, total).metrics(sums)
    for metric in ("auroc", "auprc"):
        np.testing.assert_array_equal(fast_a[metric], levels.metrics_from_sums(sums)[metric])
        np.testing.assert_array_equal(fast_b[metric], levels.metrics_from_sums(total - sums)[metric])
    one = paired_permutation_test(labels, scores, other, groups=patients, n_permutations=120, workers=1, chunk_size=7)
    three = paired_permutation_test(labels, scores, other, groups=patients, n_permutations=120, workers=3)
    pd.testing.assert_frame_equal(one, three)
