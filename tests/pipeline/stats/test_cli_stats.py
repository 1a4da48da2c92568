from __future__ import annotations

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from pipeline.cli import app
from tests.pipeline.stats.conftest import make_scores, predictions_frame

runner = CliRunner()


def _write_run(folder, seed_noise=None):
    labels, scores, patients = make_scores(0, n=150)
    if seed_noise is not None:
        scores = np.clip(scores + np.random.default_rng(seed_noise).normal(0, 0.3, scores.shape), 0, 1)
    folder.mkdir(parents=True)
    predictions_frame(labels, scores, patients).to_parquet(folder / "predictions.parquet")
    return folder


def test_stats_writes_results_next_to_predictions(tmp_path):
    run = _write_run(tmp_path / "results" / "syn" / "vit_s" / "linear")
    result = runner.invoke(app, ["stats", str(run), "--resamples", "50", "--seed", "1", "-w", str(tmp_path)])
    assert result.exit_code == 0, result.output
    results = pd.read_parquet(run / "results.parquet")
    assert {"macro", "finding_0"} <= set(results["output"]) and results["ci_low"].notna().any()
    assert "macro" in result.output
    # A run named relative to the workspace's results/ folder works too.
    again = runner.invoke(
        app,
        ["stats", "syn/vit_s/linear", "--resamples", "20", "--out", str(tmp_path / "r.parquet"), "-w", str(tmp_path)],
    )
    assert again.exit_code == 0, again.output
    assert (tmp_path / "r.parquet").is_file()


def test_compare_prints_the_paired_test_and_errors_cleanly(tmp_path):
    run_a = _write_run(tmp_path / "a")
    run_b = _write_run(tmp_path / "b", seed_noise=3)
    result = runner.invoke(
        app, ["compare", str(run_a), str(run_b), "--permutations", "50", "--out", str(tmp_path / "cmp.csv")]
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "cmp.csv")
    assert set(table["metric"]) == {"auroc", "auprc"} and (table["p_value"] > 0).all()
    missing = runner.invoke(app, ["compare", str(run_a), str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no predictions.parquet" in missing.output


def test_stats_combine_ensemble_on_a_seeds_run_and_a_clean_error_for_an_unknown_rule(tmp_path):
    labels, scores, patients = make_scores(0, n=150)
    run = tmp_path / "results" / "syn" / "vit_s" / "linear"
    run.mkdir(parents=True)
    noise = np.random.default_rng(2).normal(0, 0.2, (2, *scores.shape))
    pd.concat(
        [predictions_frame(labels, scores + noise[s], patients).assign(seed=s) for s in range(2)], ignore_index=True
    ).to_parquet(run / "predictions.parquet")
    out = tmp_path / "ensemble.parquet"
    result = runner.invoke(app, ["stats", str(run), "--resamples", "20", "--combine", "ensemble", "--out", str(out)])
    assert result.exit_code == 0, result.output
    macro = pd.read_parquet(out).query("output == 'macro' and metric == 'auroc'").iloc[0]
    assert "ensemble of 2 seeds" in macro["note"] and macro["n_seeds"] == 2
    bad = runner.invoke(app, ["stats", str(run), "--combine", "median", "--out", str(tmp_path / "x.parquet")])
    assert bad.exit_code == 2 and "--combine 'median'" in bad.output
