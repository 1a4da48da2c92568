"""Figures: every file produced and non-empty (PNG and PDF), and the numbers drawn match the statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.report.attention import attention_figure, load_attention
from pipeline.report.collect import collect_runs
from pipeline.report.figures import model_style, prevalence_band_figure, prevalence_bands
from pipeline.report.km import best_survival_run, km_groups
from pipeline.stats import evaluate_predictions
from tests.pipeline.report.fabricate import run_dir

EXPECTED = (
    "per_finding_auroc_cxrlt24",
    "auprc_by_prevalence_cxrlt24",
    "km_plco_cvd",
    "km_plco_all_cause",
    "label_efficiency_shenzhen",
    "attention_cxrlt24_vits-a",
)


def test_every_figure_is_written_as_png_and_pdf(report):
    figures = report.out_dir / "figures"
    assert sorted(f.name for f in report.figures) == sorted(EXPECTED)
    for stem in EXPECTED:
        png, pdf = figures / f"{stem}.png", figures / f"{stem}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 2000
        with Image.open(png) as image:
            width, height = image.size
            # One paper column (3.5 in at 200 dpi), give or take the layout's margins.
            assert 600 <= width <= 760 and height > 300
            assert np.asarray(image.convert("L")).std() > 10  # something is drawn
    assert not list(figures.glob(".*.tmp"))


def test_captions_and_titles_say_synthetic(report):
    for figure in report.figures:
        assert figure.caption.startswith("SYNTHETIC")
    for table in report.tables.values():
        assert table.full_title.startswith("SYNTHETIC") and "SYNTHETIC" in table.full_caption


def test_km_groups_match_the_results_log_rank_p(workspace):
    for backbone, head in (("vits-a", "glori"), ("vits-b", "linear")):
        folder = run_dir(workspace, "plco", backbone, head)
        results = pd.read_parquet(folder / "results.parquet")
        survival = pd.read_parquet(folder / "survival.parquet")
        for endpoint in ("cvd", "all_cause"):
            groups = km_groups(survival, endpoint)
            row = results[(results["metric"] == "logrank_p") & (results["output"] == endpoint)].iloc[0]
            assert groups.logrank_p == pytest.approx(row["estimate"], rel=1e-9)
            low = results[(results["metric"] == "survival_low_risk") & (results["output"] == endpoint)].iloc[0]
            assert groups.low.endpoint_survival == pytest.approx(low["estimate"])
            test = survival[(survival["endpoint"] == endpoint) & (survival["split"] == "test")]
            assert groups.low.n + groups.high.n == len(test)
            assert groups.at_times[0] == 0 and groups.at_times[-1] <= test["time"].max()


def test_prevalence_bands_are_tertiles_and_their_auprc_is_the_band_macro(workspace, tmp_path):
    bands = prevalence_bands({"a": 0.5, "b": 0.4, "c": 0.3, "d": 0.2, "e": 0.1, "f": 0.05, "g": 0.0, "h": np.nan})
    assert bands == {"High": ["a", "b"], "Medium": ["c", "d"], "Low": ["e", "f"]}

    coll = collect_runs(None, workspace)
    figure, numbers = prevalence_band_figure(coll, "cxrlt24", model_style(coll.models()), tmp_path, n_resamples=20)
    assert all(p.stat().st_size > 0 for p in figure.paths)
    assert sorted(numbers["band"].unique()) == ["High", "Low", "Medium"]
    assert len(numbers) == 3 * 6 and numbers["n_findings"].groupby(numbers["band"]).first().sum() == 40
    predictions = pd.read_parquet(run_dir(workspace, "cxrlt24", "vits-b", "mlp") / "predictions.parquet")
    results = pd.read_parquet(run_dir(workspace, "cxrlt24", "vits-b", "mlp") / "results.parquet")
    prevalence = results[results["metric"] == "prevalence"].set_index("output")["estimate"].drop("macro")
    low_band = prevalence_bands(prevalence.to_dict())["Low"]
    expected = evaluate_predictions(predictions[predictions["output"].isin(low_band)], n_resamples=20)
    expected = expected[(expected["metric"] == "auprc") & (expected["output"] == "macro")].iloc[0]
    mine = numbers[(numbers["backbone"] == "vits-b") & (numbers["head"] == "mlp") & (numbers["band"] == "Low")].iloc[0]
    assert mine["auprc"] == pytest.approx(expected["estimate"])
    assert (mine["ci_low"], mine["ci_high"]) == pytest.approx((expected["ci_low"], expected["ci_high"]))
    # AUPRC of the low-prevalence band sits above its chance level (the mean prevalence) for a useful model.
    assert mine["auprc"] > mine["mean_prevalence"]


def test_attention_loader_reads_one_file_or_one_file_per_image(tmp_path):
    maps = np.random.default_rng(0).random((3, 2, 4, 4)).astype(np.float32)
    ids = ["x_0_0", "x_1_0", "x_2_0"]
    single = tmp_path / "single"
    single.mkdir()
    np.savez(single / "maps.npz", image_id=np.array(ids), maps=maps, outputs=np.array(["A", "B"]))
    loaded = load_attention(single)
    assert loaded.image_ids == ids and loaded.outputs == ["A", "B"]
    np.testing.assert_array_equal(loaded.maps, maps)

    per_image = tmp_path / "per_image"
    per_image.mkdir()
    for image_id, m in zip(ids, maps, strict=True):
        np.savez(per_image / f"{image_id}.npz", maps=m.reshape(2, 16))  # flat patch axis, no names
    loaded = load_attention(per_image, default_outputs=["A", "B"])
    assert loaded.image_ids == ids and loaded.outputs == ["A", "B"]
    np.testing.assert_array_equal(loaded.maps, maps)
    assert load_attention(tmp_path / "per_image_missing") is None

    odd = tmp_path / "odd"
    odd.mkdir()
    np.savez(odd / "a.npz", image_id=np.array(["x"]), attention=np.ones((1, 2, 6)))  # 6 patches, no grid
    assert load_attention(odd) is None  # skipped with a warning, not a crash


def test_attention_loader_reads_the_probe_file(workspace):
    maps = load_attention(run_dir(workspace, "cxrlt24", "vits-a", "glori") / "attention")
    assert maps.maps.shape == (12, 40, 4, 4) and maps.outputs[0] == "Adenopathy"
    # Output k peaks at grid cell (k % 4, k // 4 % 4), as fabricated.
    for k in (0, 1, 9):
        assert np.unravel_index(maps.maps[0, k].argmax(), (4, 4)) == (k % 4, k // 4 % 4)


def test_attention_figure_names_unknown_findings_and_missing_images(workspace, tmp_path):
    coll = collect_runs(None, workspace)
    run = coll.run("cxrlt24", ("vits-a", "glori"))
    figure, notes = attention_figure(coll, run, tmp_path, findings=["Cardiomegaly", "Not A Finding"])
    assert figure is not None and all(p.stat().st_size > 0 for p in figure.paths)
    assert any("no attention maps for Not A Finding" in n for n in notes)
    coll.workspace = None  # no manifest to find the images: the maps are drawn alone, and the reader is told
    figure, notes = attention_figure(coll, run, tmp_path / "alone", findings=["Cardiomegaly"])
    assert figure is not None and any("drawn alone" in n for n in notes)


def test_km_figure_skips_runs_whose_groups_do_not_exist(workspace):
    coll = collect_runs(None, workspace)
    best = best_survival_run(coll, "plco", "cvd")
    assert best is not None
    # Make the best run's grouping degenerate, as the validation median can on a tiny test split.
    rows = (best.results["metric"] == "logrank_p") & (best.results["output"] == "cvd")
    best.results.loc[rows, ["estimate", "defined"]] = [np.nan, False]
    other = best_survival_run(coll, "plco", "cvd")
    assert other is not None and other.folder != best.folder
    for run in coll.full_runs("plco"):
        run.results.loc[(run.results["metric"] == "logrank_p") & (run.results["output"] == "cvd"), "estimate"] = np.nan
    assert best_survival_run(coll, "plco", "cvd") is None
    assert best_survival_run(coll, "plco", "all_cause") is not None
