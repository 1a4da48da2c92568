"""The probe run folder: its layout, its record (run.json) and its one evaluation.

`pipeline/runs/` owns the run folder as `pipeline/store/` owns the feature store. Public API (stable):

- layout: `RunFolder` (`RunFolder.of(ws, dataset, backbone, head, label_fraction)`, `folder / name`,
  `partial_dir`, `attention_path`), the file names (`PREDICTIONS_FILE`, `VAL_PREDICTIONS_FILE`,
  `SURVIVAL_FILE`, `RESULTS_FILE`, `SWEEP_FILE`, `HEAD_FILE`, `RECORD_FILE`, `ATTENTION_DIR`), label-fraction
  sub-folders (`fraction_folder`, `parse_fraction`), `find_run_folders(root)`, and the configuration tag of a
  non-default configuration's folder `<head>@<tag>` (`config_tag`, `head_folder`, `split_head_folder`,
  `PROBE_SHORT`; `RunFolder.of(..., tag=...)`).
- record: `RunRecord` (typed, versioned content of run.json; `RECORD_VERSION`), `read_record(folder)`,
  `write_record(record, folder)`, `RunRecordError`.
- evaluation: `evaluate_run(folder, config=None, record=None)` -> results.parquet rows, the same for the probe,
  `chex stats`, `chex compare` and the report; `evaluate_tables` (the same rules on in-memory tables);
  `compare_runs(a, b, config)`; `StatsConfig` / `CompareConfig` (defaults live there); `run_predictions`.
- finishing: `finish_run(folder, record, tables)` (write the task's tables, evaluate, results.parquet, run.json
  last: the one sequence of the probe, the oracle and the tests' fabricator), `mark_incomplete`, and whether a
  folder holds a complete run: `is_complete(folder, key)`, `complete_record`, `files_present`.
- files: `write_parquet`, `write_tensors`, `write_attention` (atomic, pipeline.atomic); `read_table`.
"""

from pipeline.runs.evaluate import (
    CompareConfig,
    StatsConfig,
    compare_runs,
    evaluate_run,
    evaluate_tables,
    run_predictions,
)
from pipeline.runs.finish import complete_record, files_present, finish_run, is_complete, mark_incomplete
from pipeline.runs.io import read_table, write_attention, write_parquet, write_tensors
from pipeline.runs.layout import (
    ATTENTION_DIR,
    ATTENTION_FILE,
    CONFIG_SEPARATOR,
    FRACTION_PREFIX,
    HEAD_FILE,
    PREDICTIONS_FILE,
    PROBE_SHORT,
    RECORD_FILE,
    RESULTS_FILE,
    SURVIVAL_FILE,
    SWEEP_FILE,
    VAL_PREDICTIONS_FILE,
    RunFolder,
    config_tag,
    find_run_folders,
    fraction_folder,
    head_folder,
    parse_fraction,
    split_head_folder,
)
from pipeline.runs.record import RECORD_VERSION, RunRecord, RunRecordError, read_record, write_record

__all__ = [
    "ATTENTION_DIR",
    "ATTENTION_FILE",
    "CONFIG_SEPARATOR",
    "FRACTION_PREFIX",
    "HEAD_FILE",
    "PREDICTIONS_FILE",
    "PROBE_SHORT",
    "RECORD_FILE",
    "RECORD_VERSION",
    "RESULTS_FILE",
    "SURVIVAL_FILE",
    "SWEEP_FILE",
    "VAL_PREDICTIONS_FILE",
    "CompareConfig",
    "RunFolder",
    "RunRecord",
    "RunRecordError",
    "StatsConfig",
    "compare_runs",
    "complete_record",
    "config_tag",
    "evaluate_run",
    "evaluate_tables",
    "files_present",
    "find_run_folders",
    "finish_run",
    "fraction_folder",
    "head_folder",
    "is_complete",
    "mark_incomplete",
    "parse_fraction",
    "read_record",
    "read_table",
    "run_predictions",
    "split_head_folder",
    "write_attention",
    "write_parquet",
    "write_record",
    "write_tensors",
]
