"""`RunRecord`: what run.json holds, typed and versioned; the only reader and writer of run.json.

The probe fills one record per run and writes it last. `chex stats`, `chex compare` and the report read a
run's skipped outputs, bootstrap settings and provenance from it, by attribute, never by searching keys.
`RunRecord.from_dict` refuses missing and unknown fields, so a field renamed on one side only fails loudly
(tests/pipeline/runs/test_record.py holds the contract).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import write_text_atomic
from pipeline.errors import ChexError
from pipeline.runs.layout import RECORD_FILE

RECORD_VERSION = 1


class RunRecordError(ChexError):
    """run.json is missing fields, has unknown ones, or comes from another record version."""


@dataclass(frozen=True)
class RunRecord:
    """One probe run: identity, configuration (its key), choices made, data sizes and provenance."""

    key: str  # hash of everything that changes the results (pipeline.probe.protocol._run_key)
    dataset: str
    backbone: str
    head: str
    label_fraction: float
    seed: int
    n_resamples: int  # bootstrap resamples of results.parquet's CIs
    chosen_lr: float
    val_macro_auroc: float
    test_macro_auroc: float
    selected_by: str
    epochs: int
    batch_size: int
    train_views: int
    head_config: dict[str, Any]  # the head's name and every declared option with its value (heads.registry)
    config: dict[str, Any]  # ProbeConfig.identity()
    outputs: list[str]
    skipped_train: dict[str, str]  # output -> reason; left out of lr selection, scored by its training prior
    skipped_test: dict[str, str]
    threshold_transfer: str = "quantile"  # how val thresholds reach test (pipeline.stats.evaluate_predictions)
    store_path: str = ""
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    store_attrs: dict[str, Any] = field(default_factory=dict)
    synthetic: bool = False
    data: dict[str, Any] = field(default_factory=dict)  # split sizes and notes
    feature_access: str = "memory"
    device: str = "cpu"
    timings: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    task: str = ""  # the run's task kind (pipeline/tasks/); '' in older records: told by the folder's tables
    version: int = RECORD_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = RECORD_FILE) -> RunRecord:
        """A record from run.json's content; RunRecordError names what is missing, unknown or too new/old."""
        if not isinstance(data, dict):
            raise RunRecordError(f"{source}: expected a JSON object, found {type(data).__name__}")
        version = data.get("version")
        if version != RECORD_VERSION:
            raise RunRecordError(
                f"{source}: run record version {version!r}, this chex reads version {RECORD_VERSION}; "
                "rerun the probe (`chex probe ... --force`) to rewrite it"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if _required(f)}
        missing, unknown = sorted(required - set(data)), sorted(set(data) - names)
        if missing or unknown:
            raise RunRecordError(f"{source}: missing fields {missing}, unknown fields {unknown}")
        return cls(**data)

    def differences(self, other: RunRecord | None, keys: tuple[str, ...] = ("head_config", "config")) -> list[str]:
        """'name: mine -> theirs' for each of `keys` (and their inner entries) that differs from `other`."""
        if other is None:
            return []
        changes = []
        for key in keys:
            mine, theirs = getattr(self, key), getattr(other, key)
            if isinstance(mine, dict) and isinstance(theirs, dict):
                for name in sorted(set(mine) | set(theirs)):
                    if mine.get(name) != theirs.get(name):
                        changes.append(f"{key}.{name}: {mine.get(name)!r} -> {theirs.get(name)!r}")
            elif mine != theirs:
                changes.append(f"{key}: {mine!r} -> {theirs!r}")
        return changes


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def write_record(record: RunRecord, folder: Path) -> Path:
    """run.json in `folder`, atomically."""
    path = Path(folder) / RECORD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps(record.to_dict(), indent=2, sort_keys=True, default=_jsonable))


def read_record(folder: Path) -> RunRecord | None:
    """The folder's record, None when it has no run.json; RunRecordError when run.json is unreadable."""
    path = Path(folder) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunRecordError(f"{path}: cannot read run.json ({exc}); rerun the probe with --force") from exc
    return RunRecord.from_dict(data, source=str(path))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
