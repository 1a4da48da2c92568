"""Tables: rows/columns as expected, numbers equal to results.parquet, best in bold, missing runs named."""

from __future__ import annotations

import io
import math
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from pipeline.report.cells import Cell, format_p
from pipeline.report.collect import collect_runs
from pipeline.report.latex import latex_document
from pipeline.report.tables import performance_table
from pipeline.stats import adjust_pvalues, compare_predictions
from tests.pipeline.report.conftest import PERMUTATIONS
from tests.pipeline.report.fabricate import BACKBONES, HEADS, QUALITY, SKIPPED, run_dir

HEAD_LABEL = {"linear": "Linear", "glori": "GLoRI", "mlp": "MLP"}
TABLE2_DATASETS = {"cxrlt24": "CXR-LT 24", "shenzhen": "Shenzhen", "jsrt": "JSRT"}


def _result(ws, dataset, backbone, head, metric, output="macro", fraction=1.0) -> pd.Series:
    results = pd.read_parquet(run_dir(ws, dataset, backbone, head, fraction) / "results.parquet")
    return results[(results["metric"] == metric) & (results["output"] == output)].iloc[0]


def _md_rows(text: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines() if line.startswith("|")
    ]


def _md_cell(text: str, panel: str, labels: tuple[str, str], column: str) -> str:
    rows = _md_rows(text)
    header = rows[0]
    current = None
    for row in rows[2:]:
        if row[0].startswith("*") and not row[0].startswith("**") and all(not c for c in row[1:]):
            current = row[0].strip("*")
        elif current == panel and tuple(row[:2]) == labels:
            return row[header.index(column)]
    raise KeyError((panel, labels, column))


def _display(row: pd.Series, digits: int = 3) -> str:
    if pd.isna(row["ci_low"]):  # a CI withheld (too few positives, zero width): the estimate alone
        return f"{row['estimate']:.{digits}f}"
    return f"{row['estimate']:.{digits}f} ({row['ci_low']:.{digits}f}–{row['ci_high']:.{digits}f})"


def test_table2_has_every_model_and_data_set_and_equals_results(workspace, report):
    table = report.tables["table2_performance"]
    assert table.columns == list(TABLE2_DATASETS.values())  # survival set PLCO is not in Table II
    assert [p.title for p in table.panels] == ["AUPRC", "AUROC"]
    expected_rows = [(b, HEAD_LABEL[h]) for b in BACKBONES for h in HEADS]
    assert [r.labels for r in table.panels[0].rows] == expected_rows
    markdown = (report.out_dir / "tables" / "table2_performance.md").read_text()
    csv = pd.read_csv(report.out_dir / "tables" / "table2_performance.csv", float_precision="round_trip")
    latex = (report.out_dir / "tables" / "table2_performance.tex").read_text()
    for dataset, column in TABLE2_DATASETS.items():
        for backbone in BACKBONES:
            for head in HEADS:
                labels = (backbone, HEAD_LABEL[head])
                for metric in ("auprc", "auroc"):
                    panel = metric.upper()
                    md = _md_cell(markdown, panel, labels, column).replace("**", "")
                    line = csv[(csv["Metric"] == panel) & (csv["Backbone"] == backbone) & (csv["Head"] == labels[1])]
                    if (dataset, backbone, head, 1.0) in SKIPPED:
                        assert md == "–"
                        assert math.isnan(line[column].iloc[0])
                        continue
                    row = _result(workspace, dataset, backbone, head, metric)
                    assert md == _display(row)
                    assert line[column].iloc[0] == row["estimate"]  # full precision in the CSV
                    for end in ("low", "high"):
                        got = line[f"{column} CI {end}"].iloc[0]
                        assert got == row[f"ci_{end}"] or (pd.isna(got) and pd.isna(row[f"ci_{end}"]))
                    if pd.notna(row["ci_low"]):
                        assert f"{row['ci_low']:.3f}--{row['ci_high']:.3f}" in latex


def test_best_per_column_is_bold_and_only_it(workspace, report):
    table = report.tables["table2_performance"]
    markdown = (report.out_dir / "tables" / "table2_performance.md").read_text()
    for panel in table.panels:
        for k, column in enumerate(table.columns):
            values = [row.cells[k].value for row in panel.rows]
            best = np.nanmax(values)
            for row in panel.rows:
                is_best = row.cells[k].value == best
                assert row.cells[k].bold == is_best
                assert _md_cell(markdown, panel.title, row.labels, column).startswith("**") == is_best
    # The fabricated quality makes vits-a GLoRI the best everywhere.
    assert max(QUALITY, key=QUALITY.get) == ("vits-a", "glori")
    assert table.cell("AUROC", ("vits-a", "GLoRI"), "CXR-LT 24").bold


def test_missing_runs_are_named_with_the_command(report):
    assert any(
        m
        == "no GLoRI results for jsrt (backbone vits-b): run `chex probe --head glori --dataset jsrt --backbone vits-b`"
        for m in report.missing
    )
    assert any(
        m.startswith("no results for montgomery: run `chex probe --head linear --dataset montgomery`")
        for m in report.missing
    )
    assert any("no 1%-label run for shenzhen vits-b/MLP" in m and "--label-fraction 0.01" in m for m in report.missing)
    index = (report.out_dir / "index.md").read_text()
    assert "`chex probe --head glori --dataset jsrt --backbone vits-b`" in index


def test_pvalue_table_tests_the_best_against_each_other_with_holm(workspace, report):
    table = report.tables["table2_pvalues"]
    detail = pd.read_csv(report.out_dir / "tables" / "table2_pvalues_detail.csv", float_precision="round_trip")
    assert "Holm-adjusted" in table.caption and f"{PERMUTATIONS} random permutations" in table.caption
    assert table.cell("AUROC", ("vits-a", "GLoRI"), "Shenzhen").text == "best"
    # One p per other model (5 on Shenzhen); the adjusted p equal Holm over that column's family.
    family = detail[(detail["dataset"] == "shenzhen") & (detail["metric"] == "auroc")]
    assert len(family) == 5 and (family["best_head"] == "glori").all()
    assert np.allclose(family["p_adjusted"], adjust_pvalues(family["p_value"].to_numpy(), "holm"))
    # The raw p of one pair equals the stats library's paired permutation test on the two prediction files.
    one = family[(family["backbone"] == "vits-b") & (family["head"] == "linear")].iloc[0]
    direct = compare_predictions(
        pd.read_parquet(run_dir(workspace, "shenzhen", "vits-a", "glori") / "predictions.parquet"),
        pd.read_parquet(run_dir(workspace, "shenzhen", "vits-b", "linear") / "predictions.parquet"),
        n_permutations=PERMUTATIONS,
    )
    p = direct[(direct["output"] == "macro") & (direct["metric"] == "auroc")]["p_value"].iloc[0]
    assert one["p_value"] == pytest.approx(p)
    cell = table.cell("AUROC", ("vits-b", "Linear"), "Shenzhen")
    assert cell.value == pytest.approx(one["p_adjusted"])
    markdown = (report.out_dir / "tables" / "table2_pvalues.md").read_text()
    assert _md_cell(markdown, "AUROC", ("vits-b", "Linear"), "Shenzhen") == format_p(one["p_adjusted"])
    # The run that does not exist has no comparison.
    assert table.cell("AUROC", ("vits-b", "GLoRI"), "JSRT").display() == "–"


def test_survival_table_equals_results(workspace, report):
    table = report.tables["table4_survival"]
    assert [p.title for p in table.panels] == ["CVD mortality", "All-cause mortality"]
    csv = pd.read_csv(report.out_dir / "tables" / "table4_survival.csv", float_precision="round_trip")
    markdown = (report.out_dir / "tables" / "table4_survival.md").read_text()
    for endpoint, panel, output in (
        ("cvd", "CVD mortality", "death_cvd_12y"),
        ("all_cause", "All-cause mortality", "death_all_12y"),
    ):
        for backbone in BACKBONES:
            for head in HEADS:
                labels = (backbone, HEAD_LABEL[head])
                line = csv[(csv["Endpoint"] == panel) & (csv["Backbone"] == backbone) & (csv["Head"] == labels[1])]
                auroc = _result(workspace, "plco", backbone, head, "auroc", output)
                assert line["AUROC"].iloc[0] == auroc["estimate"]
                for column, metric in (
                    ("C-index", "c_index"),
                    ("HR (95% CI)", "hazard_ratio"),
                    ("Log-rank p", "logrank_p"),
                    ("Surv. low (%)", "survival_low_risk"),
                ):
                    assert (
                        line[column].iloc[0] == _result(workspace, "plco", backbone, head, metric, endpoint)["estimate"]
                    )
                hr = _result(workspace, "plco", backbone, head, "hazard_ratio", endpoint)
                assert _md_cell(markdown, panel, labels, "HR (95% CI)") == _display(hr, 2)
                p = _result(workspace, "plco", backbone, head, "logrank_p", endpoint)["estimate"]
                assert _md_cell(markdown, panel, labels, "Log-rank p") == format_p(p)


def test_label_efficiency_table_equals_fraction_runs(workspace, report):
    table = report.tables["table_label_efficiency"]
    assert table.columns == ["1%", "10%", "100%"]
    assert [p.title for p in table.panels] == ["Shenzhen"]
    for backbone in BACKBONES:
        for head in HEADS:
            for fraction, column in ((0.01, "1%"), (0.1, "10%"), (1.0, "100%")):
                cell = table.cell("Shenzhen", (backbone, HEAD_LABEL[head]), column)
                if ("shenzhen", backbone, head, fraction) in SKIPPED:
                    assert not cell.has_value
                    continue
                row = _result(workspace, "shenzhen", backbone, head, "auroc", fraction=fraction)
                assert (cell.value, cell.low, cell.high) == (row["estimate"], row["ci_low"], row["ci_high"])


def test_latex_is_booktabs_and_balanced(report):
    for path in (report.out_dir / "tables").glob("*.tex"):
        text = path.read_text()
        for rule in ("\\toprule", "\\midrule", "\\bottomrule"):
            assert rule in text
        assert text.count("{") == text.count("}")
        assert text.count("\\begin{") == text.count("\\end{")
        assert "SYNTHETIC" in text
        body = [line for line in text.splitlines() if not line.startswith("%") and "\\label" not in line]
        assert not any(re.search(r"(?<!\\)[_%#$]", line) for line in body if "$<$" not in line)
        assert "–" not in text  # Unicode en-dash becomes --
    table2 = (report.out_dir / "tables" / "table2_performance.tex").read_text()
    assert "\\begin{table*}" in table2 and "\\textbf{" in table2


def test_latex_compiles_when_a_tex_engine_is_installed(report, tmp_path):
    """Compiled with pdflatex where one is installed (apt-get install texlive-latex-base texlive-latex-recommended)."""
    engine = shutil.which("pdflatex")
    tables = [p.read_text() for p in sorted((report.out_dir / "tables").glob("*.tex"))]
    document = latex_document(tables)
    assert document.count("\\begin{table") == len(tables) == 5  # Tables II and IV, their p-value companions, label eff.
    if engine is None:
        return
    (tmp_path / "doc.tex").write_text(document)
    result = subprocess.run(
        [engine, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert "Overfull \\hbox" not in result.stdout  # every table fits the page
    assert (tmp_path / "doc.pdf").stat().st_size > 0


def test_format_option_selects_the_table_files(workspace, tmp_path):
    from pipeline.report import write_report

    summary = write_report(
        workspace,
        out_dir=tmp_path,
        formats=("csv",),
        progress=False,
        n_permutations=10,
        results=[workspace.root / "results" / "jsrt"],
        figures=False,
    )
    written = {p.suffix for p in (tmp_path / "tables").iterdir()}
    assert written == {".csv"}
    assert (tmp_path / "index.md").is_file() and not (tmp_path / "figures").exists()
    assert summary.tables["table2_performance"].columns == ["JSRT"]


def test_csv_round_trips_and_real_data_is_not_marked_synthetic(workspace, tmp_path):
    import shutil

    copy = tmp_path / "ws"
    shutil.copytree(workspace.root / "results", copy / "results")
    coll = collect_runs([copy / "results"], workspace=None)
    table = performance_table(coll)
    assert "SYNTHETIC" not in table.full_title and "SYNTHETIC" not in table.full_caption
    from pipeline.report.formats import to_csv

    frame = pd.read_csv(io.StringIO(to_csv(table)))
    assert list(frame.columns[:3]) == ["Metric", "Backbone", "Head"]
    assert len(frame) == 2 * len(BACKBONES) * len(HEADS)


def test_cell_formatting():
    assert Cell(0.81234, 0.8, 0.83).display() == "0.812 (0.800–0.830)"
    assert Cell(0.0004, kind="pvalue").display() == "<0.001"
    assert Cell(0.0412, kind="pvalue").display() == "0.041"
    assert Cell(2.345, 1.5, 3.25, kind="ratio").display() == "2.35 (1.50–3.25)"
    assert Cell(0.784, 0.75, 0.8, kind="percent").display() == "78.4 (75.0–80.0)"
    assert Cell().display() == "–"


def test_captions_say_what_each_number_covers_and_claims(report):
    """Issue 25: the macro's fixed set, complete-case horizon AUROC, unadjusted p-values of a best picked on test."""
    for name in ("table2_performance", "table_label_efficiency"):
        caption = report.tables[name].caption
        assert "one fixed set of findings per data set" in caption and "training prior" in caption
    survival = report.tables["table4_survival"].caption
    assert "complete-case" in survival and "IPCW" in survival
    assert "median predicted risk on test" in survival
    assert "p-values are unadjusted" in survival and "picked on these same test results" in survival
    assert "picked on the same test results before it is tested" in report.tables["table2_pvalues"].caption
