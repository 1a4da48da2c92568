"""Every problem of a manifest at once (`chex manifest validate`), so fixing a hand-made manifest costs one run.

`pipeline.manifest.validate_manifest` stops at the first broken rule, which suits the stages; this module
runs each rule over the whole frame and lists what is wrong, each with the rows at fault. A manifest made from a
label table (`chex manifest custom`) names them by `lines`: each row's line in that table as a spreadsheet
numbers it (the header is line 1), with the column at fault.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.cards import DatasetCard
from pipeline.errors import ManifestError
from pipeline.manifest import (
    REQUIRED_COLUMNS,
    SPLITS,
    bad_event_mask,
    bad_label_mask,
    bad_split_mask,
    bad_time_mask,
    duplicate_mask,
    empty_mask,
    escapes_root,
    rows_of,
    split_leaks,
)


def manifest_problems(
    frame: pd.DataFrame, card: DatasetCard | None = None, root: Path | None = None, lines: np.ndarray | None = None
) -> list[str]:
    """A list of human-readable problems (empty when the manifest is fine); `lines`: see the module docstring."""
    problems: list[str] = []
    needed = [*REQUIRED_COLUMNS]
    if card is not None:
        needed += card.label_columns
        needed += [c for t in card.survival_tasks for e in t.endpoints for c in (e.time_column, e.event_column)]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        problems.append(f"missing column(s) {missing}; present: {list(frame.columns)}")
    if len(frame) == 0:
        return [*problems, "the manifest has no rows"]
    for column in ("image_id", "patient_id", "path"):
        if column in frame.columns:
            empty = empty_mask(frame[column])
            if empty.any():
                problems.append(f"empty {column} at {rows_of(frame, empty, lines=lines)}")
    if "image_id" in frame.columns:
        duplicated = duplicate_mask(frame["image_id"])
        if duplicated.any():
            n = int(frame["image_id"][duplicated].nunique())
            problems.append(f"{n} duplicate image_id value(s) at {rows_of(frame, duplicated, 'image_id', lines)}")
    if "path" in frame.columns:
        escaping = escapes_root(frame["path"])
        if escaping.any():
            problems.append(f"path outside the image root at {rows_of(frame, escaping, 'path', lines)}")
    if "split" in frame.columns:
        bad = bad_split_mask(frame["split"])
        if bad.any():
            problems.append(f"split must be one of {SPLITS} at {rows_of(frame, bad, 'split', lines)}")
        if "patient_id" in frame.columns:
            known = ~bad
            leaking, mask = split_leaks(frame["patient_id"][known], frame["split"][known])
            if len(leaking):
                rows = np.zeros(len(frame), dtype=bool)
                rows[np.flatnonzero(known)[mask]] = True
                problems.append(
                    f"{len(leaking)} patient(s) in more than one split (e.g. {leaking[:5]}) at "
                    f"{rows_of(frame, rows, 'split', lines)}; assign splits per patient"
                )
    if card is not None:
        problems += _label_problems(frame, card, lines)
    if root is not None and "path" in frame.columns:
        problems += _file_problems(frame, Path(root), lines)
    return problems


def check_manifest(
    frame: pd.DataFrame,
    card: DatasetCard | None,
    root: Path | None,
    source: str,
    *,
    lines: np.ndarray | None = None,
    earlier: list[str] | None = None,
) -> None:
    """Raise one ManifestError listing every problem (numbered, after the `earlier` ones found while building the
    frame), if there is any."""
    raise_problems([*(earlier or []), *manifest_problems(frame, card, root, lines)], source, lines is not None)


def raise_problems(problems: list[str], source: str, by_line: bool = False) -> None:
    """One ManifestError listing `problems` (numbered); nothing when the list is empty."""
    if problems:
        listing = "\n".join(f"  {i}. {p}" for i, p in enumerate(problems, 1))
        where = " (lines as a spreadsheet numbers them; the header is line 1)" if by_line else ""
        raise ManifestError(f"{source}: {len(problems)} problem(s){where}:\n{listing}")


def _label_problems(frame: pd.DataFrame, card: DatasetCard, lines: np.ndarray | None) -> list[str]:
    problems = []
    for column in card.label_columns:
        if column in frame.columns and (bad := bad_label_mask(frame[column])).any():
            problems.append(f"label {column!r} outside {{1, 0, -1, blank}} at {rows_of(frame, bad, column, lines)}")
    for task in card.survival_tasks:
        for endpoint in task.endpoints:
            time, event = endpoint.time_column, endpoint.event_column
            if time in frame.columns and (bad := bad_time_mask(frame[time])).any():
                problems.append(f"survival time {time!r} must be years >= 0 at {rows_of(frame, bad, time, lines)}")
            if event in frame.columns and (bad := bad_event_mask(frame[event])).any():
                problems.append(f"event {event!r} must be 0 or 1 at {rows_of(frame, bad, event, lines)}")
    return problems


def _file_problems(frame: pd.DataFrame, root: Path, lines: np.ndarray | None) -> list[str]:
    if not root.is_dir():
        return [f"image root {root} is not a folder"]
    missing = np.array([not (root / str(p)).is_file() for p in frame["path"]])
    if missing.any():
        return [f"{int(missing.sum())} image file(s) missing under {root} at {rows_of(frame, missing, 'path', lines)}"]
    return []
