"""`finish_run`, the one end of every run (the probe's, the oracle's, the tests' fabricator's), and
`is_complete`: run.json goes first and comes back last, with the task's headline number."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.runs import (
    RECORD_FILE,
    RESULTS_FILE,
    complete_record,
    evaluate_run,
    finish_run,
    is_complete,
    mark_incomplete,
    read_record,
    write_parquet,
)
from tests.pipeline.report.fabricate import fabricated_record


def _predictions(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    labels = (np.arange(n) % 2).astype(float)
    rows = []
    for output, shift in (("Nodule", 1.5), ("Mass", 0.5)):
        scores = 1 / (1 + np.exp(-(labels * shift + rng.normal(size=n))))
        rows.append(pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "patient_id": [f"p{k}" for k in range(n)],
                                  "split": "test", "output": output, "score": scores, "label": labels}))  # fmt: skip
    return pd.concat(rows, ignore_index=True)


def test_finish_writes_tables_results_and_the_record_last(tmp_path):
    folder = tmp_path / "run"
    record = fabricated_record("jsrt", "vits-a", "linear", 1.0, ["Nodule", "Mass"], 20, tmp_path)
    write_parquet(pd.DataFrame({"x": [1]}), folder / "survival.parquet")  # a stale table of an older run
    timings: dict[str, float] = {}
    written, results = finish_run(folder, record, {"predictions.parquet": _predictions(), "survival.parquet": None,
                                                   "sweep.parquet": pd.DataFrame({"lr": [1e-3]})},
                                  timings=timings, started=0.0)  # fmt: skip
    assert not (folder / "survival.parquet").exists()  # None removes it
    pd.testing.assert_frame_equal(pd.read_parquet(folder / RESULTS_FILE), results)
    pd.testing.assert_frame_equal(evaluate_run(folder), results)  # the same numbers wherever evaluated
    macro = results[(results["output"] == "macro") & (results["metric"] == "auroc")]["estimate"].iloc[0]
    assert read_record(folder) == written and written.test_macro_auroc == macro
    assert set(written.timings) == {"statistics_s", "total_s"}
    assert is_complete(folder, record.key) and complete_record(folder).key == record.key
    assert not is_complete(folder, "another key")
    (folder / "sweep.parquet").unlink()  # a file the record names is missing: not complete
    assert not is_complete(folder, record.key)
    mark_incomplete(folder)
    assert not (folder / RECORD_FILE).exists() and not is_complete(folder)
