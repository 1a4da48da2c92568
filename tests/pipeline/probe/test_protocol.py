from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.errors import ConfigError, StoreError
from pipeline.probe import ProbeConfig, ProbeJob, run_probe, run_probes
from pipeline.probe.data import Features, carve_patients, subsample_patients
from pipeline.report.km import km_groups
from pipeline.stats import evaluate_survival
from pipeline.store import FeatureStore
from tests.pipeline.probe.conftest import make_workspace

SMALL_GLORI = {"embed_dim": 32, "ffn_dim": 64}


def _config(**kw):
    return ProbeConfig(**{"n_resamples": 30, "epochs": 12, **kw})


@pytest.mark.slow
def test_linear_and_glori_find_planted_findings_and_null_gives_chance(tmp_path):
    planted = make_workspace(tmp_path / "planted")
    null = make_workspace(tmp_path / "null", null=True)
    for head, options in (("linear", {}), ("glori", SMALL_GLORI)):
        hit = run_probe(planted, "toy", head, config=_config(head_options=options), progress=False)
        miss = run_probe(null, "toy", head, config=_config(head_options=options), progress=False)
        assert hit.test_macro_auroc > 0.8, (head, hit)
        assert abs(miss.test_macro_auroc - 0.5) < 0.2, (head, miss)


def test_outputs_follow_the_contract_and_rerun_is_a_noop(toy_workspace):
    summary = run_probe(toy_workspace, "toy", "linear", config=_config(epochs=2), progress=False)
    folder = summary.folder
    assert folder.parent == toy_workspace.results_dir("toy", "toy-vit", "linear").parent
    assert folder.name.startswith("linear@ep2-")  # epochs 2 is not the default configuration: a folder of its own
    pred = pd.read_parquet(folder / "predictions.parquet")
    manifest = pd.read_parquet(toy_workspace.manifest_path("toy"))
    test = manifest[manifest["split"] == "test"]
    assert len(pred) == len(test) * 3 and set(pred["image_id"]) == set(test["image_id"])
    assert list(pred.columns[:6]) == ["dataset", "backbone", "head", "label_fraction", "seed", "lr"]
    assert {"image_id", "patient_id", "split", "output", "score", "label"} <= set(pred.columns)
    assert pred["score"].between(0, 1).all() and (pred["split"] == "test").all()
    merged = pred[pred["output"] == "Effusion"].merge(test, on="image_id")
    np.testing.assert_array_equal(merged["label"].to_numpy(), merged["Effusion"].to_numpy())  # NaN stays NaN
    sweep = pd.read_parquet(folder / "sweep.parquet")
    assert len(sweep) == 9 and sweep["chosen"].sum() == 1 and sweep["val_macro_auroc"].notna().all()
    assert sweep.loc[sweep["chosen"], "lr"].item() == summary.chosen_lr == pred["lr"].iloc[0]
    assert summary.val_macro_auroc == sweep.loc[sweep["chosen"], "val_macro_auroc"].item()
    results = pd.read_parquet(folder / "results.parquet")
    macro = results[(results["output"] == "macro") & (results["metric"] == "auroc")]
    assert macro["estimate"].item() == pytest.approx(summary.test_macro_auroc)
    weights = torch.load(folder / "head.pt", weights_only=True)
    assert weights["linear.weight"].shape == (3, 2 * 16)
    run = json.loads((folder / "run.json").read_text())
    assert run["checkpoint_sha256"] == "c" * 64 and run["head_config"]["name"] == "linear"
    assert run["seed"] == 0 and "torch" in run["versions"] and run["data"]["val_split"] == "manifest"
    mtime = (folder / "predictions.parquet").stat().st_mtime_ns
    again = run_probe(toy_workspace, "toy", "linear", config=_config(epochs=2), progress=False)
    assert again.skipped and (folder / "predictions.parquet").stat().st_mtime_ns == mtime
    forced = run_probe(toy_workspace, "toy", "linear", config=_config(epochs=2), force=True, progress=False)
    assert not forced.skipped
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "predictions.parquet"), pred)  # deterministic on CPU
    with pytest.raises(ConfigError, match=r"config\.n_resamples: 30 there, 20 now.*--force"):  # never silently
        run_probe(toy_workspace, "toy", "linear", config=_config(epochs=2, n_resamples=20), progress=False)
    changed = run_probe(toy_workspace, "toy", "linear", config=_config(epochs=3), progress=False)
    assert not changed.skipped and changed.folder != folder  # another configuration: beside the first
    assert (folder / "run.json").is_file()


def test_missing_images_give_a_count_examples_and_the_embed_command(tmp_path):
    ws = make_workspace(tmp_path / "ws", missing_from_store=3)
    with pytest.raises(StoreError, match=r"3 of 160 images of data set 'toy'.*toy_p000_0.*chex embed toy --backbone"):
        run_probe(ws, "toy", "linear", config=_config(), progress=False)
    with pytest.raises(StoreError, match="no feature store 'other'"):
        run_probe(ws, "toy", "linear", "other", config=_config(), progress=False)
    with pytest.raises(ConfigError, match="known heads"):
        run_probe(ws, "toy", "resnet", config=_config(), progress=False)


def test_output_without_train_positives_is_scored_by_its_prior_and_stays_in_the_macro(tmp_path):
    ws = make_workspace(tmp_path / "ws", empty_output=True)
    summary = run_probe(ws, "toy", "mlp", config=_config(epochs=2), progress=False)
    results = pd.read_parquet(summary.folder / "results.parquet")
    nodule = results[(results["output"] == "Nodule") & (results["metric"] == "auroc")]
    assert nodule["defined"].item() and nodule["estimate"].item() == 0.5
    assert "training prior (no positive labels in train)" in nodule["note"].item()
    predictions = pd.read_parquet(summary.folder / "predictions.parquet")
    assert (predictions.loc[predictions["output"] == "Nodule", "score"] == 0.0).all()  # the prior, a constant
    macro = results[(results["output"] == "macro") & (results["metric"] == "auroc")]
    assert macro["defined"].item() and np.isfinite(macro["estimate"].item()) and "3 of 3" in macro["note"].item()
    assert "Nodule without train positives scored by their training prior" in macro["note"].item()
    run = json.loads((summary.folder / "run.json").read_text())
    assert run["skipped_train"] == {"Nodule": "no positive labels"}
    assert pd.read_parquet(summary.folder / "sweep.parquet")["val_outputs"].max() == 2


def test_survival_data_set_writes_risk_per_subject(tmp_path):
    ws = make_workspace(tmp_path / "ws", dataset="plco", kind="survival")
    summary = run_probe(ws, "plco", "linear", config=_config(epochs=2), progress=False)
    surv = pd.read_parquet(summary.folder / "survival.parquet")
    pred = pd.read_parquet(summary.folder / "predictions.parquet")
    assert set(surv["endpoint"]) == {"cvd", "all_cause"} and set(pred["output"]) == {"death_cvd_12y", "death_all_12y"}
    one = surv[surv["endpoint"] == "cvd"].iloc[0]
    images = pred[(pred["patient_id"] == one["patient_id"]) & (pred["output"] == "death_cvd_12y")]
    assert len(images) == 2 and one["risk_score"] == pytest.approx(images["score"].mean())
    manifest = pd.read_parquet(ws.manifest_path("plco")).set_index("patient_id")
    assert one["time"] == manifest.loc[one["patient_id"], "time_cvd_years"].iloc[0]
    results = pd.read_parquet(summary.folder / "results.parquet")
    assert {"logrank_p", "c_index"} <= set(results.loc[results["output"] == "cvd", "metric"])
    # Test subjects only, split at their own median risk (val scores come from the sweep head, whose scale differs
    # from the refit head's), so re-evaluating the file and the report's KM grouping reproduce results.parquet.
    assert set(surv["split"]) == {"test"}
    cvd = surv[surv["endpoint"] == "cvd"]
    groups = km_groups(surv, "cvd")
    assert abs(groups.low.n - groups.high.n) <= 1 + (cvd["risk_score"] == cvd["risk_score"].median()).sum()
    f1_note = results[(results["metric"] == "f1") & (results["output"] == "death_cvd_12y")]["note"].iloc[0]
    assert "the same rate on test" in f1_note
    again = evaluate_survival(surv).set_index(["output", "metric"])["estimate"]
    stored = results.set_index(["output", "metric"])["estimate"]
    assert again[("cvd", "logrank_p")] == pytest.approx(stored[("cvd", "logrank_p")])
    assert km_groups(surv, "cvd").logrank_p == pytest.approx(stored[("cvd", "logrank_p")])


def test_carved_val_split_and_nested_label_fractions(tmp_path):
    ws = make_workspace(tmp_path / "ws", with_val=False, views=3)
    config = _config(epochs=1, label_fraction=0.25, lrs=(1e-3, 1e-2))
    summary = run_probe(ws, "toy", "linear", config=config, progress=False)
    assert summary.folder.name == "label_fraction=0.25"
    run = json.loads((summary.folder / "run.json").read_text())
    assert run["data"]["val_split"].startswith("carved from train") and run["train_views"] == 3
    manifest = pd.read_parquet(ws.manifest_path("toy"))
    n_train = (manifest["split"] == "train").sum()
    assert run["data"]["n_val"] > 0 and run["data"]["n_train"] < 0.3 * n_train
    patients = np.array([f"p{i}" for i in range(100)])
    small, large = subsample_patients(patients, 0.1, 0), subsample_patients(patients, 0.5, 0)
    assert len(small) == 10 and set(small) <= set(large)
    val = carve_patients(patients, 0.1, 0)
    assert len(val) == 10 and np.array_equal(val, carve_patients(patients, 0.1, 0))


def test_streamed_features_equal_cached_and_views_are_sampled(tmp_path):
    ws = make_workspace(tmp_path / "ws", views=2)
    store = FeatureStore.open(ws.features_dir("toy-vit"))
    ids = pd.read_parquet(ws.manifest_path("toy"))["image_id"].tolist()
    cached = Features(store, ids, ("cls", "patch"), max_views=2)
    streamed = Features(store, ids, ("cls", "patch"), max_views=2, cache_bytes=0)
    assert cached.cached is not None and streamed.cached is None
    positions = np.arange(10, 60)
    for features in (cached, streamed):
        seen = []
        for pos, tokens in features.batches(positions, 16, shuffle=True, seed=4):
            want = store.read(features.rows[0, pos])
            torch.testing.assert_close(tokens["patch"], want["patch"])
            seen += list(pos)
        assert sorted(seen) == list(positions)
    train = np.flatnonzero(cached.views_per_image == 2)
    rows_seen = set()
    for epoch in range(4):
        for pos, tokens in cached.batches(train, 64, shuffle=True, seed=epoch, sample_views=True):
            for p, c in zip(pos, tokens["cls"], strict=True):
                match = [v for v in range(2) if torch.equal(c, store.read([cached.rows[v, p]])["cls"][0])]
                rows_seen.add((int(p), match[0]))
    assert {v for _, v in rows_seen} == {0, 1}


def test_killed_sweep_resumes_to_the_same_result(toy_workspace, monkeypatch, caplog):
    from pipeline.probe import sweep

    config = _config(epochs=3, lrs=(1e-3, 1e-2))
    ref = run_probe(toy_workspace, "toy", "mlp", config=config, progress=False)
    want = pd.read_parquet(ref.folder / "predictions.parquet")
    original = sweep._checkpoint

    def killed_after_two_epochs(path, key, epoch, *args):
        original(path, key, epoch, *args)
        if path.name == "sweep.pt" and epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "_checkpoint", killed_after_two_epochs)
    with pytest.raises(KeyboardInterrupt):
        run_probe(toy_workspace, "toy", "mlp", config=config, force=True, progress=False)
    monkeypatch.setattr(sweep, "_checkpoint", original)
    assert (ref.folder / ".partial" / "sweep.pt").is_file()
    (ref.folder / "run.json").unlink()  # as if the killed run had been the first one
    with caplog.at_level(logging.INFO, logger="pipeline.probe.sweep"):
        run_probe(toy_workspace, "toy", "mlp", config=config, progress=False)
    assert "at epoch 2" in caplog.text
    pd.testing.assert_frame_equal(pd.read_parquet(ref.folder / "predictions.parquet"), want)
    assert not (ref.folder / ".partial").exists()


def test_glori_attention_maps_are_saved(toy_workspace):
    config = _config(epochs=1, lrs=(1e-3,), save_attention=4, head_options=SMALL_GLORI)
    summary = run_probe(toy_workspace, "toy", "glori", config=config, progress=False)
    maps = np.load(summary.folder / "attention" / "attention.npz")
    assert maps["attention"].shape == (4, 3, 16) and list(maps["grid"]) == [4, 4]
    np.testing.assert_allclose(maps["attention"].sum(-1), 1.0, rtol=1e-5)
    assert list(maps["output"]) == ["Cardiomegaly", "Effusion", "Nodule"]


@pytest.mark.slow
def test_batch_runner_on_a_local_dask_cluster(toy_workspace):
    jobs = [ProbeJob("toy", head, None, _config(epochs=1, lrs=(1e-3,))) for head in ("linear", "mlp")]
    summaries = run_probes(toy_workspace, jobs, dask="local", n_workers=1)
    assert [s.head for s in summaries] == ["linear", "mlp"]
    assert all((s.folder / "results.parquet").is_file() for s in summaries)
