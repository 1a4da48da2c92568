"""Which task a run folder belongs to: its run.json's `task`, else (older records, folders of bare predictions)
the registered task whose tables the folder holds."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.tasks.registry import task_named, task_names

if TYPE_CHECKING:
    from pipeline.runs.record import RunRecord
    from pipeline.tasks.base import Task


def task_of_run(folder: Path, record: RunRecord | None = None) -> Task:
    """The run's task: the record's, else the one with the most of its tables in `folder` (ties: the fewer tables
    it declares, i.e. the plainer task); classification when the folder holds none."""
    if record is not None and record.task:
        return task_named(record.task)
    folder = Path(folder)
    best, best_key = task_named("classification"), (0, 0)
    for name in task_names():
        task = task_named(name)
        present = sum((folder / table).is_file() for table in task.tables)
        key = (present, -len(task.tables))
        if present and key > best_key:
            best, best_key = task, key
    return best


def table_files() -> list[str]:
    """Every table file some registered task writes (what marks a folder as a run folder)."""
    return list(dict.fromkeys(t for name in task_names() for t in task_named(name).tables))
