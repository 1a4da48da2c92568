"""Finding runs, the index page with its provenance, and the `chex report` command."""

from __future__ import annotations

import os
import re
import shutil

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.report import collect_runs, write_report
from pipeline.report.collect import HEADS
from pipeline.stats import evaluate_predictions
from tests.pipeline.report.fabricate import BACKBONES, FAMILY, SHA, run_dir

runner = CliRunner()


def test_collect_finds_every_run_folder(workspace):
    coll = collect_runs(None, workspace)
    assert coll.datasets == ["cxrlt24", "shenzhen", "montgomery", "jsrt", "plco"]  # paper order
    assert coll.backbones == list(BACKBONES)
    assert len([r for r in coll.runs if r.dataset == "cxrlt24"]) == len(BACKBONES) * len(HEADS)
    fractions = sorted({r.label_fraction for r in coll.runs if r.dataset == "shenzhen"})
    assert fractions == [0.01, 0.1, 1.0]
    assert coll.synthetic == {"cxrlt24", "shenzhen", "jsrt", "plco", "montgomery"}
    assert coll.is_survival("plco") and not coll.is_survival("jsrt")
    assert not coll.problems


def test_identity_from_folder_names_and_results_from_predictions(workspace, tmp_path):
    source = run_dir(workspace, "shenzhen", "vits-a", "mlp", 0.1)
    folder = tmp_path / "results" / "shenzhen" / "vits-a" / "mlp" / "label_fraction=0.1"
    folder.mkdir(parents=True)
    predictions = pd.read_parquet(source / "predictions.parquet").drop(
        columns=["dataset", "backbone", "head", "label_fraction"]
    )
    predictions.to_parquet(folder / "predictions.parquet")  # no results.parquet, no identity columns
    coll = collect_runs([tmp_path / "results"], n_resamples=25)
    (run,) = coll.runs
    assert (run.dataset, run.backbone, run.head, run.label_fraction) == ("shenzhen", "vits-a", "mlp", 0.1)
    assert run.computed
    expected = evaluate_predictions(predictions, n_resamples=25)
    got = run.results.set_index(["output", "metric"])["estimate"]
    for row in expected.itertuples():
        assert got[(row.output, row.metric)] == pytest.approx(row.estimate, nan_ok=True)


def test_explicit_files_and_unreadable_folders(workspace, tmp_path):
    good = run_dir(workspace, "jsrt", "vits-a", "linear") / "results.parquet"
    bad = tmp_path / "broken" / "jsrt" / "x" / "linear"
    bad.mkdir(parents=True)
    (bad / "results.parquet").write_text("not parquet")
    coll = collect_runs([good, tmp_path / "broken", tmp_path / "nowhere"], workspace=None)
    assert [(r.dataset, r.backbone, r.head) for r in coll.runs] == [("jsrt", "vits-a", "linear")]
    assert any(str(bad) in p for p in coll.problems)
    assert any("no such results file or folder" in p for p in coll.problems)


def test_index_links_every_file_and_records_provenance(report):
    index = (report.out_dir / "index.md").read_text()
    assert index.startswith("# chex report — SYNTHETIC")
    links = re.findall(r"\]\(([^)]+)\)", index)
    written = {p for p in report.paths if p.name not in ("index.md", "index.html")}
    resolved = {(report.out_dir / link).resolve() for link in links}
    assert {p.resolve() for p in written} <= resolved
    assert all(os.path.exists(report.out_dir / link) for link in links if not link.startswith("../"))
    for backbone, sha in SHA.items():
        assert f"backbone `{backbone}`: family {FAMILY[backbone]}, weights sha256 `{sha}`" in index
    assert "- seeds: 0" in index and "- chex version: 0.1.0" in index
    assert "glori" in index.lower() and "embed_dim" in index  # head configs
    html = (report.out_dir / "index.html").read_text()
    assert "<table>" in html and 'src="figures/km_plco_cvd.png"' in html and "SYNTHETIC" in html


def test_headline_is_table_two_as_text(report):
    assert report.headline.startswith("SYNTHETIC — Table II.")
    line = next(x for x in report.headline.splitlines() if x.startswith("vits-a") and "GLoRI" in x)
    assert line.count("*") == 3  # best in all three data sets


def test_terminal_tables_show_auroc_of_table_two_and_the_survival_columns(report):
    console = Console(width=200, record=True, color_system=None)
    table2, table4 = report.headline_tables()
    assert [c.header for c in table4.columns][2:] == ["AUROC", "C-index", "HR (95% CI)", "Log-rank p"]
    console.print(table2)
    text = console.export_text()
    assert text.startswith("SYNTHETIC — Table II.")
    auroc = report.tables["table2_performance"].panels[1]
    assert auroc.title == "AUROC"
    first = auroc.rows[0].cells[0]
    assert f"{first.value:.3f}" in text and f"{first.low:.2f}–{first.high:.2f}" in text
    auprc = report.tables["table2_performance"].panels[0].rows[0].cells[0]
    assert f"{auprc.value:.3f}" not in text  # the AUPRC panel is left to the files


def test_report_with_no_results_names_what_to_run(tmp_path):
    (tmp_path / "manifests").mkdir()
    pd.DataFrame({"image_id": ["a"]}).to_parquet(tmp_path / "manifests" / "jsrt.parquet")
    summary = write_report(tmp_path, progress=False)
    assert any("run `chex probe --head linear --dataset jsrt`" in m for m in summary.missing)
    assert summary.tables == {} and (tmp_path / "reports" / "index.md").is_file()


def test_cli_writes_the_report_and_prints_missing_inputs(workspace, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(workspace.root / "results" / "jsrt", ws / "results" / "jsrt")
    result = runner.invoke(
        app, ["report", "-w", str(ws), "--format", "md,tex", "--resamples", "10", "--permutations", "10", "-q"]
    )
    assert result.exit_code == 0, result.output
    assert "Table II" in result.output and "JSRT" in result.output
    assert "no GLoRI results for jsrt (backbone vits-b)" in result.output
    assert sorted(p.name for p in (ws / "reports" / "tables").iterdir()) == [
        "table2_performance.md",
        "table2_performance.tex",
        "table2_pvalues.md",
        "table2_pvalues.tex",
    ]
    out = tmp_path / "elsewhere"
    one = run_dir(workspace, "jsrt", "vits-a", "mlp")
    result = runner.invoke(app, ["report", str(one), "--out", str(out), "--format", "csv", "-q", "-w", str(ws)])
    assert result.exit_code == 0, result.output
    assert (out / "tables" / "table2_performance.csv").is_file()


def test_cli_rejects_an_unknown_format(tmp_path):
    result = runner.invoke(app, ["report", "-w", str(tmp_path), "--format", "md,docx"])
    assert result.exit_code == 2
    assert "--format" in result.output and "docx" in result.output
