"""A finding with fewer than ~20 test positives is flagged in the report and before probing (issue 16, item 8)."""

from __future__ import annotations

import pandas as pd

from pipeline.cautions import few_test_positives, warn_few_test_positives
from tests.pipeline.probe.conftest import make_workspace


def test_few_test_positives_counts_label_one_only():
    labels = pd.DataFrame({"a": [1, 1, 0, -1, None], "b": [1] * 5})
    assert few_test_positives(labels, ["a", "b"], threshold=3) == {"a": 2}
    assert few_test_positives(labels, ["a", "b"], threshold=2) == {}


def test_the_report_says_which_findings_have_few_test_positives(report):
    assert report.cautions and all("fewer than 20 positive test images" in c for c in report.cautions)
    index = report.index.read_text()
    assert "## Cautions" in index and index.index("## Cautions") < index.index("## Missing inputs")


def test_the_probe_warns_before_training(tmp_path, caplog):
    ws = make_workspace(tmp_path / "ws", n_patients=40)
    notes = warn_few_test_positives(ws, ["toy", "toy", "absent"])
    assert len(notes) == 1 and notes[0].startswith("toy: 3 finding(s) with fewer than 20")
    assert "Cardiomegaly" in notes[0] and any(r.levelname == "WARNING" for r in caplog.records)
