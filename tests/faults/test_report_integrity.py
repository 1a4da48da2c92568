"""A report is swapped in whole: a run killed mid-write leaves the previous report untouched; names that reach
index.html are escaped."""

from __future__ import annotations

import shutil

import pytest

from tests.faults.conftest import tree_bytes
from tests.pipeline.report.fabricate import fabricate_workspace


def test_a_report_that_fails_mid_write_leaves_the_previous_one_untouched(tmp_path, monkeypatch):
    import pipeline.report.write as write

    ws = fabricate_workspace(tmp_path / "ws")
    write.write_report(ws, progress=False, n_resamples=20, n_permutations=20, figures=False)
    before = tree_bytes(ws.reports_dir)
    assert "index.md" in before and any(k.startswith("tables/") for k in before)

    runs = sorted(p for p in (ws.root / "results").glob("*/*/*") if p.is_dir())
    shutil.rmtree(runs[0])  # the next report differs: one run fewer

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # stands for a kill between the tables and the index

    monkeypatch.setattr(write, "index_markdown", killed)
    with pytest.raises(KeyboardInterrupt):
        write.write_report(ws, progress=False, n_resamples=20, n_permutations=20, figures=False)
    assert tree_bytes(ws.reports_dir) == before
    assert not [p for p in ws.root.iterdir() if p.name.endswith(".chex-tmp")]  # no half-made report left over


def test_names_in_index_html_are_escaped():
    from pipeline.report.index import index_html

    evil = "<img src=x onerror=alert(1)>"
    markdown = "\n".join(
        [
            "# chex report",
            f"- backbone `{evil}`: store {evil}",
            "",
            "<details><summary>Runs</summary>",
            "",
            "| data set | backbone |",
            "|---|---|",
            f"| toy | {evil} |",
            "",
            "</details>",
            "",
            f"### {evil}",
            f"*{evil} caption*",
        ]
    )
    page = index_html(markdown, "chex report")
    assert "<img" not in page and "onerror=alert(1)&gt;" in page
    assert "<details><summary>Runs</summary>" in page and "</details>" in page
