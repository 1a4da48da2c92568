"""Your own labelled data set -> manifest + card: a label table (CSV/Parquet) or an ImageFolder tree.

The label table has a `path` column (relative to the image root) and optionally `image_id`, `patient_id`,
`split` and `view`; every other column is a finding (1 / 0 / -1 uncertain / blank), except the survival
columns named as TIME:EVENT pairs and the columns the user tells it to ignore. The card's tasks are inferred
from the columns: one finding is a binary task, several a multilabel task, each TIME:EVENT pair a survival
endpoint with its "event within the horizon" output. Without a split column, patients are split at random
(seeded) in the stated fractions. Nothing is written until the whole table is checked.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from data_manifests.adapters.common import view_name
from data_manifests.adapters.folder import IMAGE_SUFFIXES
from pipeline.cards import DatasetCard, Endpoint, Task
from pipeline.errors import ConfigError, ManifestError
from pipeline.manifest import LABEL_VALUES, SPLITS, within_horizon
from pipeline.splits import stratified_patient_parts

log = logging.getLogger(__name__)

RESERVED = ("image_id", "path", "patient_id", "split", "view", "source")
SPLIT_ALIASES = {"valid": "val", "validation": "val", "dev": "val", "training": "train", "testing": "test"}
NEGATIVE_CLASSES = ("normal", "negative", "healthy", "no_finding", "nofinding", "no finding")
DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}


@dataclass(frozen=True)
class SurvivalSpec:
    """A TIME:EVENT[:HORIZON] pair of the label table."""

    time: str
    event: str
    horizon: float = 5.0

    @classmethod
    def parse(cls, text: str) -> SurvivalSpec:
        parts = text.split(":")
        if len(parts) not in (2, 3) or not all(parts[:2]):
            raise ConfigError(f"--survival {text!r}: expected TIME_COLUMN:EVENT_COLUMN[:HORIZON_YEARS]")
        try:
            horizon = float(parts[2]) if len(parts) == 3 else 5.0
        except ValueError as exc:
            raise ConfigError(f"--survival {text!r}: the horizon must be a number of years") from exc
        return cls(parts[0], parts[1], horizon)


@dataclass
class CustomOptions:
    """How `build_custom` reads a label table (the `chex manifest custom` options)."""

    survival: Sequence[SurvivalSpec] = ()
    ignore: Sequence[str] = ()
    patient_regex: str | None = None
    fractions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    seed: int = 0


def read_labels(path: str | Path) -> pd.DataFrame:
    """A label table from CSV or Parquet (ids and paths kept as text)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--labels {path}: no such file")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype={c: str for c in ("image_id", "path", "patient_id", "split", "view")})
    except Exception as exc:  # pandas/pyarrow raise many types for a file that is not a table
        raise ConfigError(f"--labels {path}: not a readable CSV or Parquet table ({exc})") from exc


def build_custom(
    name: str, labels: pd.DataFrame, options: CustomOptions, source: str = "labels"
) -> tuple[pd.DataFrame, DatasetCard, list[str]]:
    """(manifest, card, notes) from a label table; ConfigError/ManifestError name the column or rows at fault."""
    if "path" not in labels.columns:
        raise ManifestError(
            f"{source}: needs a `path` column (image file relative to --root); has {list(labels.columns)}"
        )
    frame = labels.copy()
    frame["path"] = frame["path"].astype(str).str.replace("\\", "/", regex=False)
    notes: list[str] = []
    if "image_id" not in frame.columns:
        frame.insert(0, "image_id", frame["path"])
    frame["image_id"] = frame["image_id"].astype(str)
    frame["patient_id"] = _patients(frame, options.patient_regex, source, notes)
    if "view" in frame.columns:
        frame["view"] = [view_name(v) or (None if pd.isna(v) else str(v)) for v in frame["view"]]
    survival_columns = {c for s in options.survival for c in (s.time, s.event)}
    for column in [*survival_columns, *options.ignore]:
        if column not in frame.columns:
            raise ConfigError(
                f"{source}: no column {column!r} (named by --survival/--ignore); has {list(frame.columns)}"
            )
    findings = [c for c in frame.columns if c not in RESERVED and c not in survival_columns and c not in options.ignore]
    _check_findings(frame, findings, source)
    frame["split"] = _splits(frame, options, notes, findings)
    tasks: list[Task] = []
    if len(findings) == 1:
        tasks.append(Task(findings[0], "binary", (findings[0],)))
    elif findings:
        tasks.append(Task("findings", "multilabel", tuple(findings)))
    for spec in options.survival:
        output = f"{spec.event}_within_{spec.horizon:g}y"
        frame[output] = within_horizon(
            pd.to_numeric(frame[spec.time], errors="coerce").to_numpy(),
            pd.to_numeric(frame[spec.event], errors="coerce").to_numpy(),
            spec.horizon,
        )
        endpoint = Endpoint(spec.event, spec.time, spec.event)
        tasks.append(
            Task(f"survival_{spec.event}", "survival", (output,), endpoints=(endpoint,), horizon_years=spec.horizon)
        )
    if not tasks:
        raise ConfigError(f"{source}: no finding or survival columns left to predict (columns {list(labels.columns)})")
    keep = [c for c in frame.columns if c not in options.ignore]
    frame = frame[keep].reset_index(drop=True)
    card = DatasetCard(
        name=name,
        title=name,
        tasks=tuple(tasks),
        description=f"Custom data set made by `chex manifest custom` from {source}.",
        probe={"epochs": 10, "batch_size": 64},
        notes=tuple(notes),
    )
    return frame, card, notes


def labels_from_subdirs(root: str | Path) -> pd.DataFrame:
    """An ImageFolder tree (`root/<class>/.../image`) as a label table: with two classes one of which reads as
    normal/negative, one binary column named after the other class; otherwise one 1/0 column per class."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"--root {root}: not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise ConfigError(f"--labels-from-subdirs: {root} needs at least two class folders, found {classes}")
    rows = []
    for label in classes:
        for file in sorted((root / label).rglob("*")):
            if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                rows.append((file.relative_to(root).as_posix(), label))
    if not rows:
        raise ConfigError(f"--labels-from-subdirs: no PNG/JPEG/DICOM images under the class folders of {root}")
    table = pd.DataFrame(rows, columns=["path", "_class"])
    negatives = [c for c in classes if c.lower() in NEGATIVE_CLASSES]
    if len(classes) == 2 and len(negatives) == 1:
        positive = next(c for c in classes if c not in negatives)
        table[positive] = (table["_class"] == positive).astype(float)
    else:
        for label in classes:
            table[label] = (table["_class"] == label).astype(float)
    return table.drop(columns="_class")


def _patients(frame: pd.DataFrame, regex: str | None, source: str, notes: list[str]) -> pd.Series:
    if regex is not None:
        try:
            pattern = re.compile(regex)
        except re.error as exc:
            raise ConfigError(f"--patient-regex {regex!r}: not a regular expression ({exc})") from exc
        names = frame["path"].map(lambda p: p.rsplit("/", 1)[-1])
        matches = names.map(pattern.search)
        unmatched = matches.isna()
        if unmatched.any():
            examples = ", ".join(names[unmatched].head(3))
            raise ConfigError(
                f"--patient-regex {regex!r} matches no patient in {int(unmatched.sum())} file name(s), e.g. {examples}"
            )
        notes.append(f"patient ids from the file names by --patient-regex {regex!r}")
        return matches.map(lambda m: m.group(1) if m.groups() else m.group(0)).astype(str)
    if "patient_id" in frame.columns:
        return frame["patient_id"].astype(str).where(frame["patient_id"].notna(), "")
    notes.append("no patient_id column and no --patient-regex: each image is its own patient")
    log.warning("no patient_id column and no --patient-regex: each image counts as its own patient")
    return frame["image_id"].astype(str)


def _splits(frame: pd.DataFrame, options: CustomOptions, notes: list[str], findings: list[str]) -> pd.Series:
    if "split" in frame.columns:
        return frame["split"].map(lambda s: SPLIT_ALIASES.get(str(s).strip().lower(), str(s).strip().lower()))
    fractions = options.fractions
    if any(k not in SPLITS for k in fractions) or any(v < 0 for v in fractions.values()) or not fractions.get("test"):
        raise ConfigError(f"--split-fractions {fractions}: give train,val,test fractions >= 0 with a test share")
    labels = frame[findings].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64) if findings else None
    assigned = stratified_patient_parts(frame["patient_id"].tolist(), labels, fractions, options.seed)
    text = ", ".join(f"{k} {v:g}" for k, v in fractions.items())
    note = (
        f"no split column: patients split at random ({text}; seed {options.seed}), stratified by finding, with a "
        "positive and a negative of each finding in val and test wherever train can spare one"
    )
    notes.append(note)
    log.warning("%s", note)
    return frame["patient_id"].map(assigned)


def _check_findings(frame: pd.DataFrame, findings: list[str], source: str) -> None:
    """Every finding column holds 1/0/-1/blank; one error naming each column that does not."""
    bad = []
    for column in findings:
        values = pd.to_numeric(frame[column], errors="coerce")
        wrong = (values.isna() & frame[column].notna()) | (values.notna() & ~values.isin(LABEL_VALUES))
        if wrong.any():
            shown = sorted({repr(v) for v in frame.loc[wrong, column].head(50).tolist()})[:5]
            bad.append(f"{column!r} (values {', '.join(shown)})")
        else:
            frame[column] = values.astype(np.float64)
    if bad:
        raise ManifestError(
            f"{source}: finding columns must hold 1, 0, -1 or blank: {'; '.join(bad)}. Recode them, name survival "
            "columns with --survival TIME:EVENT, or leave a column out with --ignore COLUMN"
        )


@dataclass
class CustomResult:
    """What `make_custom` wrote."""

    manifest_path: Path
    card_path: Path
    frame: pd.DataFrame
    card: DatasetCard
    notes: list[str]


def make_custom(
    name: str, labels: pd.DataFrame, root: str | Path, out: str | Path, options: CustomOptions, source: str = "labels"
) -> CustomResult:
    """Build, check everything at once (ids, splits, leakage, labels, files under `root`), then write the
    manifest and `<name>.card.yaml` beside it; the card records the image root for later stages."""
    from dataclasses import replace

    from pipeline.manifest import write_manifest
    from pipeline.manifest_check import check_manifest

    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"--root {root}: not a folder")
    frame, card, notes = build_custom(name, labels, options, source)
    card = replace(card, image_root=str(root.resolve()))
    check_manifest(frame, card, root, source)
    out = Path(out)
    write_manifest(frame, out, card)
    card_path = out.with_name(out.name.removesuffix(".parquet") + ".card.yaml")
    card.save(card_path)
    return CustomResult(out, card_path, frame, card, notes)
