"""One run folder, one set of numbers: the probe's results.parquet, `chex stats RUN`, `evaluate_run` and the
report (for a folder without results.parquet) agree for every head and task type; `chex stats RUN` never writes
over the probe's results unless asked; the report's p-value tests the macro difference it prints."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.probe import ProbeConfig, run_probe
from pipeline.report.collect import collect_runs
from tests.pipeline.probe.conftest import make_workspace

runner = CliRunner()
SMALL = {"linear": {}, "glori": {"embed_dim": 16, "ffn_dim": 16}, "mlp": {"hidden": 16}}


def _probe(ws, head, **kw):
    config = ProbeConfig(lrs=(1e-2,), epochs=2, n_resamples=40, head_options=SMALL[head], **kw)
    return run_probe(ws, "toy", head, config=config, progress=False)


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    columns = ["output", "metric", "estimate", "ci_low", "ci_high", "n", "n_pos", "defined", "note"]
    pd.testing.assert_frame_equal(a[columns].reset_index(drop=True), b[columns].reset_index(drop=True))


@pytest.mark.parametrize("kind", ["multilabel", "survival"])
@pytest.mark.parametrize("head", ["linear", "glori", "mlp"])
def test_probe_stats_and_report_give_the_same_numbers(tmp_path, head, kind):
    ws = make_workspace(tmp_path / "ws", kind=kind, empty_output=kind == "multilabel", n_patients=60)
    folder = _probe(ws, head).folder
    results = pd.read_parquet(folder / "results.parquet")
    written = (folder / "results.parquet").read_bytes()

    shown = runner.invoke(app, ["stats", str(folder)])
    assert shown.exit_code == 0, shown.output
    assert (folder / "results.parquet").read_bytes() == written  # the probe's results are never replaced
    assert "not written" in shown.output and "--overwrite" in shown.output
    out = tmp_path / "stats.parquet"
    assert runner.invoke(app, ["stats", str(folder), "--out", str(out)]).exit_code == 0
    _same(pd.read_parquet(out), results)

    from pipeline.runs import evaluate_run

    _same(evaluate_run(folder), results)
    copy = tmp_path / "copy" / "toy" / "toy-vit" / head
    shutil.copytree(folder, copy)
    (copy / "results.parquet").unlink()
    (run,) = collect_runs([tmp_path / "copy"]).runs
    assert run.computed
    _same(run.results, results)
    if kind == "multilabel":  # Nodule has no train positives: scored by its prior, in the macro everywhere
        macro = results[(results["output"] == "macro") & (results["metric"] == "auroc")]
        assert "mean over 3 of 3 outputs" in macro["note"].item()
    again = runner.invoke(app, ["stats", str(folder), "--overwrite", "--resamples", "20"])
    assert again.exit_code == 0 and (folder / "results.parquet").read_bytes() != written


def test_the_report_p_value_tests_the_printed_macro_difference(tmp_path):
    from pipeline.report.comparisons import _compare, best_vs_others

    ws = make_workspace(tmp_path / "ws", empty_output=True, n_patients=60)
    _probe(ws, "linear")
    _probe(ws, "mlp")
    coll = collect_runs(None, ws)
    table, problems = best_vs_others(coll, n_permutations=50)
    assert not problems and len(table) == 2
    for row in table.itertuples():
        best, other = (row.best_backbone, row.best_head), (row.backbone, row.head)
        a, b = sorted([best, other])
        tested = _compare(coll, "toy", a, b, 50, 0)
        macro = tested[(tested["output"] == "macro") & (tested["metric"] == row.metric)]
        diff = float(macro["diff"].iloc[0]) * (1 if a == best else -1)
        assert diff == pytest.approx(row.diff, abs=1e-12)  # the printed difference is the tested one
        assert np.isfinite(row.p_value)
