"""Small things that cost trust (issue 26, item 11): `chex store info` without a name, `chex report` on an empty
workspace, formula-looking cells in the CSVs chex writes, and the tiny demo saying it is a smoke test."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from pipeline.cli import app
from tests.pipeline.probe.conftest import make_workspace
from tests.pipeline.stats.conftest import make_scores, predictions_frame

runner = CliRunner()


def test_store_info_without_a_name_shows_the_default_backbone(tmp_path):
    ws = make_workspace(tmp_path / "ws", n_patients=6)
    result = runner.invoke(app, ["store", "info", "-w", str(ws.root)])
    assert result.exit_code == 0, result.output
    assert f"store       {ws.features_dir('toy-vit')}" in result.output


def test_report_on_an_empty_workspace_is_an_error(tmp_path):
    result = runner.invoke(app, ["report", "-w", str(tmp_path / "empty")])
    assert result.exit_code == 2, result.output
    assert "no probe results" in result.output and "chex probe" in result.output
    assert not (tmp_path / "empty" / "reports").exists()


FORMULAS = ['=HYPERLINK("http://x","y")', "+1+2", "-2+3", "@SUM(A1)"]


def test_stats_csv_escapes_formula_cells_and_keeps_numbers(tmp_path):
    labels, scores, patients = make_scores(0, n=80)
    run = tmp_path / "run"
    run.mkdir()
    predictions_frame(labels, scores, patients, outputs=FORMULAS).to_parquet(run / "predictions.parquet")
    out = tmp_path / "x.csv"
    result = runner.invoke(app, ["stats", str(run), "--resamples", "20", "--out", str(out), "-w", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(out.open()))
    cells = [c for row in rows for c in row]
    assert not [c for c in cells if (c and c[0] in "=+@") or (c[:1] == "-" and not _number(c))], rows[:3]
    assert {"'" + f for f in FORMULAS} <= set(cells)
    table = pd.read_csv(out)
    assert np.issubdtype(table["estimate"].dtype, np.floating)  # numbers stay numbers


def test_csv_cell_rules():
    from pipeline.atomic import csv_cell

    assert csv_cell("=1+1") == "'=1+1" and csv_cell("@x") == "'@x" and csv_cell("\tx") == "'\tx"
    assert csv_cell("-0.5") == "-0.5" and csv_cell(-0.5) == -0.5 and csv_cell("Cardiomegaly") == "Cardiomegaly"


def test_tiny_demo_says_it_is_a_smoke_test(monkeypatch, tmp_path):
    import pipeline.demo as demo

    seen = {}
    monkeypatch.setattr(demo, "generate_cohort", lambda *a, **k: {})
    monkeypatch.setattr(demo, "_pretrain", lambda *a, **k: None)
    monkeypatch.setattr(demo, "_random_init_checkpoint", lambda *a, **k: None)
    monkeypatch.setattr(demo, "embed_datasets", lambda *a, **k: None)
    monkeypatch.setattr(demo, "_probe_jobs", lambda *a, **k: [])
    monkeypatch.setattr(demo, "write_oracle_runs", lambda *a, **k: [])
    monkeypatch.setattr(demo, "write_report", lambda ws, **k: seen.update(report=k))
    result = runner.invoke(app, ["demo", "--size", "tiny", "-w", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.output
    assert "smoke test, not evidence" in " ".join(result.output.split())
    assert any("smoke test, not evidence" in c for c in seen["report"]["cautions"])  # and in its report
    demo.run_demo(demo.Workspace(tmp_path / "ws2"), size="small", progress=False)
    assert seen["report"]["cautions"] == ()  # only the tiny demo says so


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
