"""Every problem of a manifest at once (`chex manifest validate`), so fixing a hand-made manifest costs one run.

`pipeline.manifest.validate_manifest` stops at the first broken rule, which suits the stages; this module
runs each rule over the whole frame and lists what is wrong, each with the rows at fault.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.cards import DatasetCard
from pipeline.errors import ManifestError
from pipeline.manifest import LABEL_VALUES, REQUIRED_COLUMNS, SPLITS, rows_of


def manifest_problems(frame: pd.DataFrame, card: DatasetCard | None = None, root: Path | None = None) -> list[str]:
    """A list of human-readable problems (empty when the manifest is fine)."""
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
            empty = frame[column].isna() | (frame[column].astype(str).str.len() == 0)
            if empty.any():
                problems.append(f"empty {column} at {rows_of(frame, empty)}")
    if "image_id" in frame.columns:
        duplicated = frame["image_id"].duplicated(keep=False) & frame["image_id"].notna()
        if duplicated.any():
            n = int(frame["image_id"][duplicated].nunique())
            problems.append(f"{n} duplicate image_id value(s) at {rows_of(frame, duplicated, 'image_id')}")
    if "path" in frame.columns:
        paths = frame["path"].astype(str).str.replace("\\", "/", regex=False)
        escaping = paths.str.startswith("/") | paths.str.contains(r"(?:^|/)\.\.(?:/|$)") | paths.str.match(r"^.:")
        if escaping.any():
            problems.append(f"path outside the image root at {rows_of(frame, escaping, 'path')}")
    if "split" in frame.columns:
        bad = ~frame["split"].isin(SPLITS)
        if bad.any():
            problems.append(f"split must be one of {SPLITS} at {rows_of(frame, bad, 'split')}")
        if "patient_id" in frame.columns:
            per_patient = frame.groupby("patient_id", sort=False)["split"].nunique()
            leaking = per_patient[per_patient > 1]
            if len(leaking):
                mask = frame["patient_id"].isin(leaking.index)
                problems.append(
                    f"{len(leaking)} patient(s) in more than one split (e.g. {list(leaking.index[:5])}) at "
                    f"{rows_of(frame, mask, 'split')}; assign splits per patient"
                )
    if card is not None:
        problems += _label_problems(frame, card)
    if root is not None and "path" in frame.columns:
        problems += _file_problems(frame, Path(root))
    return problems


def check_manifest(frame: pd.DataFrame, card: DatasetCard | None, root: Path | None, source: str) -> None:
    """Raise one ManifestError listing every problem (numbered), if there is any."""
    problems = manifest_problems(frame, card, root)
    if problems:
        listing = "\n".join(f"  {i}. {p}" for i, p in enumerate(problems, 1))
        raise ManifestError(f"{source}: {len(problems)} problem(s):\n{listing}")


def _label_problems(frame: pd.DataFrame, card: DatasetCard) -> list[str]:
    problems = []
    for column in card.label_columns:
        if column not in frame.columns:
            continue
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = (values.isna() & frame[column].notna()) | (values.notna() & ~values.isin(LABEL_VALUES))
        if bad.any():
            problems.append(f"label {column!r} outside {{1, 0, -1, blank}} at {rows_of(frame, bad, column)}")
    for task in card.survival_tasks:
        for endpoint in task.endpoints:
            if endpoint.time_column in frame.columns:
                time = pd.to_numeric(frame[endpoint.time_column], errors="coerce")
                bad = time.isna() | (time < 0)
                if bad.any():
                    problems.append(
                        f"survival time {endpoint.time_column!r} must be years >= 0 at "
                        f"{rows_of(frame, bad, endpoint.time_column)}"
                    )
            if endpoint.event_column in frame.columns:
                event = pd.to_numeric(frame[endpoint.event_column], errors="coerce")
                bad = ~event.isin((0.0, 1.0))
                if bad.any():
                    problems.append(
                        f"event {endpoint.event_column!r} must be 0 or 1 at "
                        f"{rows_of(frame, bad, endpoint.event_column)}"
                    )
    return problems


def _file_problems(frame: pd.DataFrame, root: Path) -> list[str]:
    if not root.is_dir():
        return [f"image root {root} is not a folder"]
    missing = np.array([not (root / str(p)).is_file() for p in frame["path"]])
    if missing.any():
        return [f"{int(missing.sum())} image file(s) missing under {root} at {rows_of(frame, missing, 'path')}"]
    return []
