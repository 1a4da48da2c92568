"""Your own labelled data set -> manifest + card: a label table (CSV/Parquet) or an ImageFolder tree.

The label table has a `path` column (relative to the image root) and optionally `image_id`, `patient_id`,
`split` and `view`; every other column is a finding (1 / 0 / -1 uncertain / blank), except the survival
columns named as TIME:EVENT pairs and the columns the user tells it to ignore. The card's tasks are inferred
from the columns: one finding is a binary task, several a multilabel task, each TIME:EVENT pair a survival
endpoint with its "event within the horizon" output. Without a split column, patients are split at random
(seeded) in the stated fractions. Nothing is written until the whole table is checked, and every problem of the
table is listed in one error: options that name no column first, then each data problem with the lines at fault
as a spreadsheet numbers them (the header is line 1; `read_labels` records them) and the column.

`--patient-regex` takes the patient from each file name (its first group, else the whole match); a name it does not
match keeps its own image id as its patient, and the notes (printed and kept in the card) say how many and which.
Class folders (`labels_from_subdirs`) skip hidden and system entries (`__MACOSX`, `.DS_Store`, `._*`), saying so.
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
from data_manifests.adapters.folder import image_files, is_system_entry, skipped_text
from pipeline.cards import DatasetCard, Endpoint, Task
from pipeline.errors import ConfigError, ManifestError
from pipeline.manifest import LABEL_VALUES, MAX_EXAMPLES, SPLITS, rows_of, within_horizon
from pipeline.manifest_check import check_manifest, raise_problems
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


LINES_ATTR = "chex_table_lines"  # DataFrame.attrs key: each row's line in its CSV (header = line 1)
NOTES_ATTR = "chex_table_notes"  # DataFrame.attrs key: what making the table skipped or assumed


def read_labels(path: str | Path) -> pd.DataFrame:
    """A label table from CSV or Parquet (ids and paths kept as text). A CSV's blank lines are dropped, and each
    row's line as a spreadsheet numbers it is kept in `attrs[LINES_ATTR]` for messages."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--labels {path}: no such file")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        table = pd.read_csv(
            path, dtype={c: str for c in ("image_id", "path", "patient_id", "split", "view")}, skip_blank_lines=False
        )
    except Exception as exc:  # pandas/pyarrow raise many types for a file that is not a table
        raise ConfigError(f"--labels {path}: not a readable CSV or Parquet table ({exc})") from exc
    kept = table.notna().any(axis=1).to_numpy()
    table = table[kept].reset_index(drop=True)
    table.attrs[LINES_ATTR] = np.flatnonzero(kept) + 2  # record k (0-based) is line k + 2 below the header
    return table


def build_custom(
    name: str, labels: pd.DataFrame, options: CustomOptions, source: str = "labels"
) -> tuple[pd.DataFrame, DatasetCard, list[str]]:
    """(manifest, card, notes) from a label table; ConfigError names a bad option, and one ManifestError lists
    every data problem with the lines (or rows) and column at fault."""
    frame, card, notes, problems = _build(name, labels, options, source)
    raise_problems(problems, source, labels.attrs.get(LINES_ATTR) is not None)
    return frame, card, notes


def _build(
    name: str, labels: pd.DataFrame, options: CustomOptions, source: str
) -> tuple[pd.DataFrame, DatasetCard, list[str], list[str]]:
    """`build_custom`'s work: (manifest, card, notes, problems), the problems collected rather than raised."""
    if "path" not in labels.columns:
        raise ManifestError(
            f"{source}: needs a `path` column (image file relative to --root); has {list(labels.columns)}"
        )
    lines = labels.attrs.get(LINES_ATTR)
    notes: list[str] = list(labels.attrs.get(NOTES_ATTR, []))
    frame = labels.copy()
    frame.attrs = {}  # the table's provenance stays here, out of the manifest file
    frame["path"] = frame["path"].map(lambda p: p if pd.isna(p) else str(p).replace("\\", "/"))
    if "image_id" not in frame.columns:
        frame.insert(0, "image_id", frame["path"])
    frame["image_id"] = frame["image_id"].map(lambda i: i if pd.isna(i) else str(i))
    survival_columns = {c for s in options.survival for c in (s.time, s.event)}
    for column in [*survival_columns, *options.ignore]:
        if column not in frame.columns:
            raise ConfigError(
                f"{source}: no column {column!r} (named by --survival/--ignore); has {list(frame.columns)}"
            )
    frame["patient_id"] = _patients(frame, options.patient_regex, source, notes)
    if "view" in frame.columns:
        frame["view"] = [view_name(v) or (None if pd.isna(v) else str(v)) for v in frame["view"]]
    findings = [c for c in frame.columns if c not in RESERVED and c not in survival_columns and c not in options.ignore]
    problems = _check_findings(frame, findings, lines)
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
    return frame, card, notes, problems


def labels_from_subdirs(root: str | Path) -> pd.DataFrame:
    """An ImageFolder tree (`root/<class>/.../image`) as a label table: with two classes one of which reads as
    normal/negative, one binary column named after the other class; otherwise one 1/0 column per class. Hidden and
    system entries (`__MACOSX`, `.DS_Store`, `._*`) are neither classes nor images; a note in
    `attrs[NOTES_ATTR]` says how many were skipped."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"--root {root}: not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not is_system_entry(p.name))
    if len(classes) < 2:
        raise ConfigError(f"--labels-from-subdirs: {root} needs at least two class folders, found {classes}")
    rows, skipped = [], [p for p in root.iterdir() if is_system_entry(p.name) and not p.is_dir()]
    for entry in sorted(p for p in root.iterdir() if p.is_dir() and is_system_entry(p.name)):
        skipped += [p for p in entry.rglob("*") if p.is_file()] or [entry]
    for label in classes:
        files, hidden = image_files(root / label)
        skipped += hidden
        rows += [(file.relative_to(root).as_posix(), label) for file in files]
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
    table = table.drop(columns="_class")
    if skipped:
        text = skipped_text(sorted(skipped), root)
        log.warning("%s", text)
        table.attrs[NOTES_ATTR] = [text]
    return table


def _patients(frame: pd.DataFrame, regex: str | None, source: str, notes: list[str]) -> pd.Series:
    if regex is not None:
        try:
            pattern = re.compile(regex)
        except re.error as exc:
            raise ConfigError(f"--patient-regex '{regex}': not a regular expression ({exc})") from exc
        names = frame["path"].fillna("").map(lambda p: p.rsplit("/", 1)[-1])
        matches = names.map(pattern.search)
        unmatched = matches.isna().to_numpy()
        if unmatched.all():
            examples = ", ".join(names.head(3))
            raise ConfigError(
                f"--patient-regex '{regex}' matches no patient in any of the {len(names)} file names, e.g. {examples}"
            )
        patients = matches.map(lambda m: None if m is None else _patient_of(m))
        notes.append(f"patient ids from the file names by --patient-regex '{regex}'")
        if unmatched.any():
            examples = ", ".join(names[unmatched].head(MAX_EXAMPLES))
            text = (
                f"{int(unmatched.sum())} of {len(names)} file names have no patient match for --patient-regex "
                f"'{regex}' (e.g. {examples}); each of those images is its own patient"
            )
            notes.append(text)
            log.warning("%s", text)
            patients = patients.where(~unmatched, frame["image_id"])
        return patients.astype(str)
    if "patient_id" in frame.columns:
        return frame["patient_id"].astype(str).where(frame["patient_id"].notna(), "")
    notes.append("no patient_id column and no --patient-regex: each image is its own patient")
    log.warning("no patient_id column and no --patient-regex: each image counts as its own patient")
    return frame["image_id"].astype(str)


def _patient_of(match: re.Match) -> str:
    """The first group of a --patient-regex match (the whole match when it has none, or the group took no part)."""
    group = match.group(1) if match.groups() else None
    return group if group is not None else match.group(0)


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


def _check_findings(frame: pd.DataFrame, findings: list[str], lines: np.ndarray | None) -> list[str]:
    """Every finding column holds 1/0/-1/blank: one problem naming each column that does not, with its lines.
    Good columns become float; a bad column's bad values become blank (nothing is written while a problem remains,
    and the manifest check then does not report them twice)."""
    bad = []
    for column in findings:
        values = pd.to_numeric(frame[column], errors="coerce")
        wrong = ((values.isna() & frame[column].notna()) | (values.notna() & ~values.isin(LABEL_VALUES))).to_numpy()
        if wrong.any():
            bad.append(f"{column!r} at {rows_of(frame, wrong, column, lines)}")
        frame[column] = values.where(~wrong).astype(np.float64)
    if not bad:
        return []
    return [
        f"finding columns must hold 1, 0, -1 or blank: {'; '.join(bad)}. Recode them, name survival "
        "columns with --survival TIME:EVENT, or leave a column out with --ignore COLUMN"
    ]


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

    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"--root {root}: not a folder")
    frame, card, notes, problems = _build(name, labels, options, source)
    card = replace(card, image_root=str(root.resolve()))
    check_manifest(frame, card, root, source, lines=labels.attrs.get(LINES_ATTR), earlier=problems)
    out = Path(out)
    write_manifest(frame, out, card)
    card_path = out.with_name(out.name.removesuffix(".parquet") + ".card.yaml")
    card.save(card_path)
    return CustomResult(out, card_path, frame, card, notes)
