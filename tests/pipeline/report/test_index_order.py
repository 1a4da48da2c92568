"""The report's first screen is its results, provenance and optional runs folded below them (issue 26, item 13),
and runs of one head in two configurations are two labelled rows (issue 26, item 7)."""

from __future__ import annotations

import dataclasses
import re
import shutil

from pipeline.report.collect import collect_runs
from pipeline.report.missing import missing_inputs, rerun_hint
from pipeline.report.tables import performance_table
from pipeline.runs import CompareConfig, RunFolder, compare_runs, read_record, write_record
from pipeline.workspace import Workspace
from tests.pipeline.report.fabricate import run_dir


def test_the_tables_come_before_cautions_missing_inputs_and_provenance(report):
    index = report.index.read_text()
    first_table = re.search(r"^### .*Table II\.", index, flags=re.MULTILINE).start()
    assert report.cautions and report.missing  # all three sections are there
    for section in ("## Cautions", "## Figures", "## Missing inputs", "## Provenance"):
        assert first_table < index.index(section), section
    assert index.index("## Figures") < index.index("## Missing inputs") < index.index("## Provenance")
    html = (report.out_dir / "index.html").read_text()
    first_table = html.index("<table>")
    for section in ("Cautions", "Missing inputs", "Provenance"):
        assert first_table < html.index(f"<h2>{section}</h2>"), section
    assert re.search(r"<h2>Missing inputs</h2>\s*<details><summary>\d+ runs or files that would add", html)
    assert re.search(r"<h2>Provenance</h2>\s*<details><summary>chex 0\.1\.0, \S+, \d+ runs</summary>", html)
    assert html.count("<details>") == html.count("</details>") == 3  # missing, provenance, its runs table


def test_each_head_configuration_is_listed_once_readably(report):
    lines = [line for line in report.index.read_text().splitlines() if line.startswith("- head ")]
    assert lines == [
        "- head GLoRI: embed_dim 768, num_heads 8, ffn_dim 2048, dropout 0.1, train_queries off",
        "- head Linear: no options",
        "- head MLP: no options",
    ]


def test_two_configurations_of_one_head_are_two_labelled_rows(workspace, tmp_path):
    ws = Workspace(tmp_path / "ws")
    source = run_dir(workspace, "jsrt", "vits-a", "glori")
    shutil.copytree(source, run_dir(ws, "jsrt", "vits-a", "glori"))
    narrow = RunFolder.of(ws, "jsrt", "vits-a", "glori", 1.0, tag="dim64-ffn128-abcdef").root  # as the demo's
    shutil.copytree(source, narrow)
    record = read_record(narrow)
    write_record(dataclasses.replace(record, head_config={**record.head_config, "embed_dim": 64, "ffn_dim": 128}),
                 narrow)  # fmt: skip
    coll = collect_runs([ws.root / "results"])
    labels = [row.labels for row in performance_table(coll).panels[0].rows]
    assert labels == [("vits-a", "GLoRI (dim 64, ffn 128)"), ("vits-a", "GLoRI (dim 768, ffn 2048)")]
    assert not coll.problems  # before: "two run folders for (jsrt, vits-a, glori, 1.0) ... using the first"
    compared = compare_runs(run_dir(ws, "jsrt", "vits-a", "glori"), narrow, CompareConfig(n_permutations=20))
    assert compared["model_a"].iloc[0] == "vits-a/glori"  # `chex compare` titles: not "glori vs glori"
    assert compared["model_b"].iloc[0] == "vits-a/glori@dim64-ffn128-abcdef"

    shutil.rmtree(run_dir(ws, "jsrt", "vits-a", "glori"))  # the demo's configuration alone
    coll = collect_runs([ws.root / "results"])
    assert [row.labels for row in performance_table(coll).panels[0].rows] == [("vits-a", "GLoRI (dim 64, ffn 128)")]
    assert not [m for m in missing_inputs(coll) if m.startswith("no GLoRI results")]  # a GLoRI run is there
    hint = rerun_hint(coll.runs[0], 0.1)
    assert hint == "`chex probe --head glori --dataset jsrt --backbone vits-a --label-fraction 0.1 --glori-dim 64 " \
        "--glori-ffn-dim 128`"  # fmt: skip
