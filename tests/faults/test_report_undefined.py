"""An undefined metric (the run exists, the metric cannot be computed) shows as 'undefined' with its reason,
never as '–', which the captions keep for a missing run."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tests.pipeline.report.fabricate import fabricate_workspace


def test_an_undefined_macro_auroc_is_shown_and_explained(tmp_path):
    from pipeline.report import write_report

    ws = fabricate_workspace(tmp_path / "ws")
    path = sorted((ws.root / "results").glob("*/*/linear/results.parquet"))[0]
    results = pd.read_parquet(path)
    macro = (results["output"] == "macro") & (results["metric"] == "auroc")
    results.loc[macro, ["estimate", "ci_low", "ci_high"]] = np.nan
    results.loc[macro, "defined"] = False
    results.loc[macro, "note"] = "undefined: no positive test labels; 95% percentile CI"
    results.to_parquet(path, index=False)

    summary = write_report(ws, progress=False, n_resamples=20, n_permutations=20, figures=False)
    table = (summary.out_dir / "tables" / "table2_performance.md").read_text()
    row = next(line for line in table.splitlines() if "undefined" in line)
    assert "linear" in row.lower() or "Linear" in row, row
    assert "undefined (no positive test labels)" in table
    assert "undefined" in (summary.out_dir / "index.md").read_text()
