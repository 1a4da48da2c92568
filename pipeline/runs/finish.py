"""Finishing a run folder, the one sequence the probe, the synthetic oracle and the tests' fabricator share:
write the run's tables, evaluate them (`evaluate_run`, by the run's task), write results.parquet, and write
run.json last; and telling whether a folder already holds a complete run.

A folder is complete when its run.json exists and every file the record names is present: run.json is removed
first (`mark_incomplete`) and written last, so a run killed half-way is never taken for a finished one.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from pipeline.errors import ChexError
from pipeline.runs.evaluate import StatsConfig, evaluate_run
from pipeline.runs.io import write_parquet
from pipeline.runs.layout import RECORD_FILE, RESULTS_FILE
from pipeline.runs.record import RunRecord, read_record, write_record

log = logging.getLogger(__name__)


def mark_incomplete(folder: Path) -> None:
    """Remove run.json: from here until `finish_run` writes the new one, the folder holds no complete run."""
    (Path(folder) / RECORD_FILE).unlink(missing_ok=True)


def finish_run(
    folder: Path,
    record: RunRecord,
    tables: Mapping[str, pd.DataFrame | None],
    config: StatsConfig | None = None,
    timings: dict[str, float] | None = None,
    started: float | None = None,
) -> tuple[RunRecord, pd.DataFrame]:
    """Write `tables` (file name -> rows; None removes a stale file of that name), evaluate the folder with
    `record` by its task, write results.parquet, then run.json with the task's headline number (and `timings`:
    statistics_s, and total_s since `started`). Returns the written record and the results."""
    from pipeline.tasks import task_of_run

    folder = Path(folder)
    mark_incomplete(folder)
    for name, frame in tables.items():
        if frame is None:
            (folder / name).unlink(missing_ok=True)
        else:
            write_parquet(frame, folder / name)
    t0 = time.perf_counter()
    results = evaluate_run(folder, config, record=record)
    if timings is not None:
        timings["statistics_s"] = time.perf_counter() - t0
    write_parquet(results, folder / RESULTS_FILE)
    changes: dict[str, object] = {"test_macro_auroc": task_of_run(folder, record).headline(results)}
    if timings is not None:
        if started is not None:
            timings["total_s"] = time.perf_counter() - started
        changes["timings"] = timings
    record = dataclasses.replace(record, **changes)
    write_record(record, folder)
    return record, results


def files_present(folder: Path, record: RunRecord) -> bool:
    """Whether every file `record` names is in `folder`."""
    return all((Path(folder) / name).is_file() for name in record.files)


def complete_record(folder: Path, key: str | None = None) -> RunRecord | None:
    """The folder's record when it holds a complete run (of `key`, when given); None otherwise (no run.json, an
    unreadable or older one, another key, or a file it names missing)."""
    try:
        record = read_record(folder)
    except ChexError as exc:  # an older or damaged record: the run is redone
        log.warning("%s", exc)
        return None
    if record is None or (key is not None and record.key != key) or not files_present(folder, record):
        return None
    return record


def is_complete(folder: Path, key: str | None = None) -> bool:
    """Whether `folder` holds a complete run (of `key`, when given)."""
    return complete_record(folder, key) is not None
