"""Dice / IoU per structure per image and their patient-level bootstrap CI, against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import dice as scipy_dice
from scipy.spatial.distance import jaccard as scipy_jaccard
from sklearn.metrics import jaccard_score

from pipeline.stats.bootstrap import resample_indices
from pipeline.stats.segmentation import bootstrap_mean, image_scores, overlap_scores, summarise


def test_overlap_scores_match_scipy_and_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(10):
        a, b = rng.random((9, 11)) < 0.4, rng.random((9, 11)) < 0.5
        dice, iou = overlap_scores(a, b)
        assert dice == pytest.approx(1.0 - scipy_dice(a.ravel(), b.ravel()))
        assert iou == pytest.approx(1.0 - scipy_jaccard(a.ravel(), b.ravel()))
        assert iou == pytest.approx(jaccard_score(b.ravel(), a.ravel()))
        assert dice == pytest.approx(2 * iou / (1 + iou))
    empty = np.zeros((3, 3), bool)
    assert overlap_scores(empty, empty) == (1.0, 1.0)
    assert overlap_scores(empty, ~empty) == (0.0, 0.0)
    with pytest.raises(ValueError, match="shape"):
        overlap_scores(empty, np.zeros((3, 4), bool))


def _direct_means(values, patients, n_resamples, seed):
    """The bootstrap by hand: the same patient draws, each drawn patient's images concatenated, then averaged."""
    ids, units = np.unique(patients, return_inverse=True)
    by_unit = [values[units == u] for u in range(len(ids))]
    out = []
    for chunk in resample_indices(len(ids), n_resamples, seed=seed):
        for row in chunk:
            out.append(np.concatenate([by_unit[u] for u in row]).mean())
    return np.array(out)


def test_patient_bootstrap_equals_a_direct_loop():
    rng = np.random.default_rng(3)
    patients = np.repeat([f"p{i}" for i in range(25)], rng.integers(1, 4, size=25))
    values = rng.uniform(0.6, 1.0, size=len(patients))
    estimate, low, high, reps = bootstrap_mean(values, patients, n_resamples=300, seed=7)
    direct = _direct_means(values, patients, 300, 7)
    assert estimate == pytest.approx(values.mean())
    np.testing.assert_allclose(reps, direct, rtol=1e-10)
    assert (low, high) == pytest.approx(tuple(np.percentile(direct, [2.5, 97.5])))
    assert low < estimate < high


def test_image_scores_and_summary_per_structure():
    rng = np.random.default_rng(5)
    truths, preds, images, patients = [], [], [], []
    for i in range(30):
        lung = rng.random((12, 12)) < 0.5
        heart = rng.random((12, 12)) < 0.2
        truths.append({"lungs": lung, "heart": heart})
        flip = rng.random((12, 12)) < 0.1
        preds.append({"lungs": lung ^ flip, "heart": heart & ~flip})
        images.append(f"img{i}")
        patients.append(f"p{i // 2}")
    scores = image_scores(preds, truths, images, patients)
    assert len(scores) == 60 and set(scores["structure"]) == {"lungs", "heart"}
    assert scores.loc[0, "dice"] == pytest.approx(overlap_scores(preds[0]["lungs"], truths[0]["lungs"])[0])
    table = summarise(scores, n_resamples=200, seed=0).set_index(["structure", "metric"])
    lungs = scores[scores["structure"] == "lungs"]
    assert table.loc[("lungs", "dice"), "estimate"] == pytest.approx(lungs["dice"].mean())
    assert table.loc[("lungs", "dice"), "n_patients"] == 15 and table.loc[("lungs", "dice"), "n_images"] == 30
    per_image = scores.groupby("image_id")["iou"].mean()
    assert table.loc[("mean", "iou"), "estimate"] == pytest.approx(per_image.mean())
    for _, row in table.iterrows():
        assert row["ci_low"] <= row["estimate"] <= row["ci_high"]
    with pytest.raises(KeyError, match="heart"):
        image_scores([{"lungs": truths[0]["lungs"]}], [truths[0]], ["a"], ["p"])


def test_paired_permutation_matches_scipy_exact_and_swaps_patients():
    import pandas as pd
    from scipy import stats

    from pipeline.stats.segmentation import paired_permutation

    rng = np.random.default_rng(0)
    n = 9
    a = pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "patient_id": [f"p{k}" for k in range(n)],
                      "structure": "heart", "dice": rng.random(n), "iou": rng.random(n)})  # fmt: skip
    b = a.assign(dice=a["dice"] - 0.2 + rng.normal(0, 0.3, n), iou=rng.random(n))
    rows = paired_permutation(a, b, n_permutations=1000).set_index(["structure", "metric"])
    for metric in ("dice", "iou"):
        ref = stats.permutation_test(
            (a[metric].to_numpy(), b[metric].to_numpy()), lambda x, y: np.mean(x - y),
            permutation_type="samples", n_resamples=np.inf,
        )  # fmt: skip
        assert rows.loc[("heart", metric), "p_value"] == pytest.approx(ref.pvalue)
        assert rows.loc[("heart", metric), "exact"]
    assert rows.loc[("heart", "dice"), "diff"] == pytest.approx((a["dice"] - b["dice"]).mean())
    # two images of one patient swap together: 2 patients -> 4 patterns, p >= 2/4
    two = a.iloc[:4].assign(patient_id=["p0", "p0", "p1", "p1"])
    rows = paired_permutation(two, two.assign(dice=two["dice"] - 1.0), n_permutations=1000)
    assert rows.iloc[0]["n_units"] == 2 and rows.iloc[0]["p_value"] == pytest.approx(0.5)


def test_summarise_counts_images_when_ids_are_categories():
    """Run tables are read with text as categories: the over-structures row must not count every id x patient pair."""
    import pandas as pd

    rows = [(f"i{k}", f"p{k}", s, 0.9, 0.8) for k in range(4) for s in ("heart", "lungs")]
    scores = pd.DataFrame(rows, columns=["image_id", "patient_id", "structure", "dice", "iou"])
    summary = summarise(scores.astype({c: "category" for c in ("image_id", "patient_id", "structure")}), 50)
    mean = summary[(summary["structure"] == "mean") & (summary["metric"] == "dice")].iloc[0]
    assert mean["n_images"] == 4 and mean["n_patients"] == 4 and mean["estimate"] == pytest.approx(0.9)
