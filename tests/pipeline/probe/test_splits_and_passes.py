"""Stratified patient-level splits, CV folds, --seeds / --cv aggregation and --standardize (issue 25)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from data_manifests.adapters.custom import CustomOptions, build_custom
from pipeline.probe import ProbeConfig, run_probe
from pipeline.probe.cv import fold_of_positions
from pipeline.probe.data import Features, carve_patients, fit_standardizer, load_probe_data
from pipeline.runs import RESULTS_FILE, evaluate_tables
from pipeline.runs.evaluate import StatsConfig
from pipeline.runs.passes import combine_seeds, corrected_t_interval
from pipeline.splits import stratified_patient_parts
from pipeline.store import FeatureStore
from tests.pipeline.probe.conftest import make_workspace


def _folder_table(n_pos: int, n_neg: int) -> pd.DataFrame:
    """A `--labels-from-subdirs` label table: one image per patient, one binary finding."""
    paths = [f"TB/{i}.png" for i in range(n_pos)] + [f"normal/{i}.png" for i in range(n_neg)]
    return pd.DataFrame({"path": paths, "TB": [1.0] * n_pos + [0.0] * n_neg})


def test_seventeen_image_folder_gets_both_classes_in_val_and_test():
    """Issue 25: a 17-image folder without a split column gave val 3 positives and 0 negatives."""
    table = _folder_table(12, 5)
    for seed in range(20):
        frame, _, notes = build_custom("mine", table, CustomOptions(seed=seed))
        for split in ("val", "test"):
            y = frame.loc[frame["split"] == split, "TB"]
            assert (y == 1).any() and (y == 0).any(), (seed, split, frame["split"].value_counts().to_dict())
        assert any("stratified" in note for note in notes)


def test_stratified_parts_keep_each_part_near_its_share_of_every_stratum():
    rng = np.random.default_rng(0)
    patients = [f"p{i}" for i in range(300)]
    labels = (rng.random((300, 3)) < [0.3, 0.1, 0.03]).astype(float)
    parts = stratified_patient_parts(patients, labels, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=4)
    split = np.array([parts[p] for p in patients])
    for k in range(3):
        total = labels[:, k].sum()
        for name, share in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
            assert abs(labels[split == name, k].sum() - share * total) <= 3, (k, name)


def test_carved_val_split_holds_both_classes_where_train_has_two_of_each():
    patients = np.array([f"p{i}" for i in range(12)])
    labels = np.array([[1.0]] * 10 + [[0.0]] * 2)
    for seed in range(10):
        carved = carve_patients(patients, 0.1, seed, labels)
        y = labels[np.isin(patients, carved), 0]
        assert (y == 1).any() and (y == 0).any()
        assert len(carved) < len(patients)


def test_cv_folds_are_patient_disjoint_and_stratified():
    rng = np.random.default_rng(1)
    patients = np.repeat([f"p{i}" for i in range(50)], 3)
    labels = np.repeat((rng.random((50, 1)) < 0.3).astype(float), 3, axis=0)
    folds = fold_of_positions(patients, labels, 5, seed=2)
    frame = pd.DataFrame({"patient": patients, "fold": folds, "y": labels[:, 0]})
    assert (frame.groupby("patient")["fold"].nunique() == 1).all()
    per_fold = frame.drop_duplicates("patient").groupby("fold")["y"].agg(["sum", "count"])
    assert len(per_fold) == 5
    assert per_fold["sum"].max() - per_fold["sum"].min() <= 1
    assert per_fold["count"].max() - per_fold["count"].min() <= 2


def test_corrected_t_interval_matches_the_formula():
    values = np.array([0.71, 0.75, 0.69, 0.8, 0.77, 0.73, 0.7, 0.78, 0.74, 0.76])
    mean, half = corrected_t_interval(values, 0.25)
    j = len(values)
    expected = stats.t.ppf(0.975, j - 1) * np.sqrt((1 / j + 0.25) * values.var(ddof=1))
    assert np.isclose(mean, values.mean()) and np.isclose(half, expected)


def test_combine_seeds_gives_mean_sd_and_flags_seed_spread_above_the_ci():
    rows = pd.DataFrame(
        {
            "output": ["A", "A", "A", "B", "B", "B"],
            "metric": ["auroc"] * 6,
            "estimate": [0.70, 0.74, 0.78, 0.90, 0.901, np.nan],
            "ci_low": [0.60, 0.64, 0.68, 0.85, 0.85, np.nan],
            "ci_high": [0.80, 0.84, 0.88, 0.95, 0.95, np.nan],
            "defined": [True, True, True, True, True, False],
            "note": [""] * 6,
            "n": [10] * 6,
            "n_pos": [4] * 6,
            "_seed": [0, 1, 2, 0, 1, 2],
        }
    )
    out = combine_seeds(rows).set_index("output")
    assert np.isclose(out.loc["A", "estimate"], 0.74)
    assert np.isclose(out.loc["A", "seed_sd"], np.std([0.70, 0.74, 0.78], ddof=1))
    assert np.isclose(out.loc["A", "ci_low"], 0.64) and np.isclose(out.loc["A", "ci_high"], 0.84)
    assert out.loc["A", "n_seeds"] == 3 and out.loc["B", "n_seeds"] == 2
    assert "above the CI half-width" not in out.loc["A", "note"]  # SD 0.04 < half-width 0.10
    tight = rows.assign(ci_low=rows["estimate"] - 0.01, ci_high=rows["estimate"] + 0.01)
    assert "above the CI half-width" in combine_seeds(tight).set_index("output").loc["A", "note"]


def test_probe_with_seeds_reports_the_mean_of_each_seeds_own_results(tmp_path):
    ws = make_workspace(tmp_path / "ws", n_patients=40)
    config = ProbeConfig(lrs=(1e-3, 1e-2), epochs=2, n_resamples=20, seeds=2, seed=3)
    summary = run_probe(ws, "toy", "linear", config=config, progress=False)
    predictions = pd.read_parquet(summary.folder / "predictions.parquet")
    val = pd.read_parquet(summary.folder / "val_predictions.parquet")
    assert sorted(predictions["seed"].unique()) == [3, 4]
    results = pd.read_parquet(summary.folder / RESULTS_FILE)
    assert "seed_sd" in results.columns
    stats_config = StatsConfig(n_resamples=20, seed=3)
    per_seed = [
        evaluate_tables(predictions[predictions["seed"] == s], val[val["seed"] == s], None, {}, stats_config)
        for s in (3, 4)
    ]
    macro = [float(r.query("output == 'macro' and metric == 'auroc'")["estimate"].iloc[0]) for r in per_seed]
    row = results.query("output == 'macro' and metric == 'auroc'").iloc[0]
    assert np.isclose(row["estimate"], np.mean(macro))
    assert np.isclose(row["seed_sd"], np.std(macro, ddof=1))
    assert np.isclose(summary.test_macro_auroc, np.mean(macro))
    sweep = pd.read_parquet(summary.folder / "sweep.parquet")
    assert sorted(sweep["seed"].unique()) == [3, 4]


def test_probe_with_cv_predicts_every_image_once_per_repeat(tmp_path):
    ws = make_workspace(tmp_path / "ws", kind="binary", n_patients=30)
    config = ProbeConfig(lrs=(1e-3, 1e-2), epochs=2, n_resamples=20, cv_folds=3, cv_repeats=2)
    summary = run_probe(ws, "toy", "linear", config=config, progress=False)
    predictions = pd.read_parquet(summary.folder / "predictions.parquet")
    n_images = 60
    for seed in (0, 1):
        rows = predictions[predictions["seed"] == seed]
        assert rows["image_id"].nunique() == n_images and len(rows) == n_images
        assert (rows.groupby("patient_id")["fold"].nunique() == 1).all()
    results = pd.read_parquet(summary.folder / RESULTS_FILE)
    row = results.query("output == 'macro' and metric == 'auroc'").iloc[0]
    assert "corrected repeated-CV t interval" in row["note"]
    assert row["ci_low"] < row["estimate"] < row["ci_high"]


def test_cv_and_seeds_together_are_refused():
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="--cv-repeats"):
        ProbeConfig(cv_folds=5, seeds=3)


def test_standardizer_is_fitted_on_train_only(tmp_path):
    ws = make_workspace(tmp_path / "ws", n_patients=30)
    data = load_probe_data(ws, "toy")
    store = FeatureStore.open(ws.features_dir("toy-vit"))
    features = Features(store, list(data.image_ids), ("cls", "patch"))
    fitted = fit_standardizer(features, data.train)
    cls = store.read(store.rows(list(data.image_ids[data.train]), view=0), ("cls",))["cls"].double().numpy()
    assert np.allclose(fitted.mean["cls"].numpy(), cls.mean(axis=0), atol=1e-5)
    assert np.allclose(fitted.std["cls"].numpy(), cls.std(axis=0), atol=1e-4)
    everything = fit_standardizer(features, np.arange(len(data.image_ids)))
    assert not np.allclose(everything.mean["cls"].numpy(), fitted.mean["cls"].numpy())
    features.standardizer = fitted
    _, tokens = next(features.batches(data.train, len(data.train)))
    assert np.allclose(tokens["cls"].double().numpy().mean(axis=0), 0, atol=1e-4)
    assert np.allclose(tokens["patch"].double().numpy().mean(axis=(0, 2)), 0, atol=1e-4)


def test_report_cells_show_the_seed_sd_and_say_when_it_exceeds_the_ci():
    from pipeline.report.cells import Cell, Panel, ReportTable, Row, seed_notes
    from pipeline.report.tables import result_cell

    results = pd.DataFrame(
        {"output": ["macro"], "metric": ["auroc"], "estimate": [0.8], "ci_low": [0.79], "ci_high": [0.81],
         "seed_sd": [0.03], "n_seeds": [5], "note": [""]}
    )  # fmt: skip
    cell = result_cell(results, "auroc")
    assert cell.display() == "0.800 (0.790–0.810) ±0.030"
    assert cell.seed_spread_exceeds_ci
    table = ReportTable("t", "T", "", ["Model"], ["Shenzhen"], [Panel(None, [Row(("glori",), [cell])])])
    notes = seed_notes(table)
    assert "over 5 seeds" in notes[0] and "exceeds the CI half-width 0.010" in notes[1]
    assert seed_notes(ReportTable("t", "T", "", ["Model"], ["S"], [Panel(None, [Row(("x",), [Cell(0.8)])])])) == []


def test_combine_ensemble_scores_the_seeds_averaged_scores_once_and_keeps_the_seed_sd():
    """`chex stats --combine ensemble`: one model of N probes (each image's score averaged over the seeds), scored
    with its own interval; the single seeds' SD stays beside it. A --cv run cannot be ensembled."""
    from pipeline.errors import ConfigError
    from pipeline.runs.passes import evaluate_passes
    from tests.pipeline.stats.conftest import make_scores, predictions_frame

    labels, scores, patients = make_scores(7, n=120)
    noise = np.random.default_rng(1).normal(0, 0.2, (3, *scores.shape))
    frame = pd.concat(
        [predictions_frame(labels, scores + noise[s], patients).assign(seed=s, lr=1e-3 * (s + 1)) for s in range(3)],
        ignore_index=True,
    )
    config = StatsConfig(n_resamples=30)

    def one(p, v, s):
        return evaluate_tables(p, v, s, {}, config)

    mean = evaluate_passes(frame, None, None, one)
    ensemble = evaluate_passes(frame, None, None, one, combine="ensemble")
    averaged = predictions_frame(labels, scores + noise.mean(axis=0), patients).drop(columns=["seed", "lr"])
    direct = one(averaged, None, None)
    key = ["output", "metric"]
    got, want = ensemble.set_index(key), direct.set_index(key)
    np.testing.assert_allclose(got.loc[want.index, "estimate"], want["estimate"], rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(got.loc[want.index, "ci_low"], want["ci_low"], rtol=1e-12, equal_nan=True)
    # The single seeds' SD is in the note, not in seed_sd (a report would print it beside the ensemble's CI).
    single_sd = mean.set_index(key).loc[("macro", "auroc"), "seed_sd"]
    note = got.loc[("macro", "auroc"), "note"]
    assert "ensemble of 3 seeds" in note and f"single-seed SD {single_sd:.4f}" in note
    assert got["seed_sd"].isna().all() and got.loc[("macro", "auroc"), "n_seeds"] == 3
    with pytest.raises(ConfigError, match="--cv"):
        evaluate_passes(frame.assign(fold=0), None, None, one, combine="ensemble")
    with pytest.raises(ConfigError, match="--combine"):
        evaluate_passes(frame, None, None, one, combine="median")
