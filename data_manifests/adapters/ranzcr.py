"""RANZCR CLiP: train.csv (StudyInstanceUID, the 11 line labels, PatientID) -> manifest; train_annotations.csv
(StudyInstanceUID, label, data = the line's [[x, y], ...] points in pixels) -> a sidecar of line coordinates.

Images are `train/<StudyInstanceUID>.jpg` (path `<uid>.jpg`; with --root found under it). Kaggle's test labels
were never released, so the split is a seeded patient-level 70/10/20 of train.csv (the card's paper_splits).
`make_manifest` writes the annotations beside the manifest as `sidecars/<manifest>.annotations.parquet` (a
subfolder, so the workspace does not take it for a data set; image_id, label, x, y: one row per annotated line,
x and y the point lists), for the segmentation / line-localisation work the
task-kind seam will plug in (docs/architecture.md); `n_lines` in the manifest counts them per image.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from data_manifests.adapters.common import (
    Source,
    check_unique,
    csv_lines,
    paper_fractions,
    parse_labels,
    parse_sources,
    read_csv,
)
from data_manifests.adapters.common import patient_splits as split_patients
from pipeline.atomic import write_atomic
from pipeline.cards import packaged_card
from pipeline.errors import ManifestError
from pipeline.manifest import rows_of

UID = "StudyInstanceUID"
ANNOTATION_COLUMNS = (UID, "label", "data")


def build(sources: Sequence[str | Source], seed: int = 0) -> pd.DataFrame:
    labels_file, annotations_file = _files(parse_sources(sources))
    card = packaged_card("ranzcr")
    columns = card.label_columns
    raw = read_csv(labels_file.path, [UID, *columns, "PatientID"], dtype=str, keep_default_na=False)
    raw[UID] = raw[UID].str.strip()
    if (raw[UID] == "").any():
        at = rows_of(raw, (raw[UID] == "").to_numpy(), UID, csv_lines(raw))
        raise ManifestError(f"{labels_file.path}: empty {UID} at {at}")
    check_unique(raw, UID, labels_file.path)
    labels = parse_labels(raw, columns, labels_file.path, allow_uncertain=False)
    blank = labels.isna().any(axis=1)
    if blank.any():
        raise ManifestError(
            f"{labels_file.path}: blank label at {rows_of(raw, blank.to_numpy(), UID, csv_lines(raw))}; expected 0 or 1"
        )
    frame = pd.DataFrame(
        {
            "image_id": raw[UID],
            "path": raw[UID] + ".jpg",
            "patient_id": raw["PatientID"].str.strip(),
        }
    )
    splits = split_patients(list(frame["patient_id"]), paper_fractions(card), seed)
    frame["split"] = frame["patient_id"].map(splits)
    frame["view"] = None  # not recorded (mostly AP ICU films)
    n_lines = pd.Series(0, index=frame["image_id"])
    if annotations_file is not None:
        lines = read_annotations(annotations_file.path)
        unknown = ~lines["image_id"].isin(frame["image_id"])
        if unknown.any():
            raise ManifestError(
                f"{annotations_file.path}: {int(unknown.sum())} line(s) of images not in {labels_file.path.name} "
                f"(e.g. {lines['image_id'][unknown].iloc[0]!r})"
            )
        n_lines = n_lines.add(lines.groupby("image_id").size(), fill_value=0)
        frame.attrs["annotations"] = str(annotations_file.path)
    frame["n_lines"] = n_lines.loc[frame["image_id"]].to_numpy(dtype=np.int64)
    for column in columns:
        frame[column] = labels[column].to_numpy()
    return frame


def _files(sources: list[Source]) -> tuple[Source, Source | None]:
    """train.csv and, optionally, train_annotations.csv (told apart by their columns' names in the file name)."""
    labels = [s for s in sources if "annotation" not in s.path.name.lower()]
    annotations = [s for s in sources if "annotation" in s.path.name.lower()]
    if len(labels) != 1 or len(annotations) > 1:
        raise ManifestError(
            f"ranzcr: expected train.csv and optionally train_annotations.csv, got {[str(s.path) for s in sources]}"
        )
    return labels[0], (annotations[0] if annotations else None)


def read_annotations(path: Path) -> pd.DataFrame:
    """train_annotations.csv -> image_id, label, x, y (point lists in pixels), one row per line."""
    raw = read_csv(path, ANNOTATION_COLUMNS, dtype=str, keep_default_na=False)
    xs, ys = [], []
    for row, text in enumerate(raw["data"]):
        try:
            points = np.asarray(json.loads(text), dtype=np.float64)
        except (json.JSONDecodeError, ValueError, TypeError) as exc:
            raise ManifestError(f"{path} {_line(raw, row)}: data is not a list of [x, y] points ({exc})") from exc
        if points.ndim != 2 or points.shape[1] != 2 or len(points) < 1:
            raise ManifestError(f"{path} {_line(raw, row)}: data must be a non-empty list of [x, y] points")
        xs.append(points[:, 0].tolist())
        ys.append(points[:, 1].tolist())
    labels = packaged_card("ranzcr").label_columns
    bad = ~raw["label"].isin(labels)
    if bad.any():
        raise ManifestError(f"{path}: unknown line label(s) {sorted(set(raw['label'][bad]))[:5]}; expected {labels}")
    return pd.DataFrame({"image_id": raw[UID].str.strip(), "label": raw["label"], "x": xs, "y": ys})


def _line(raw: pd.DataFrame, row: int) -> str:
    lines = csv_lines(raw)
    return f"line {lines[row]}" if lines is not None else f"row {row}"


def annotations_path(manifest: str | Path) -> Path:
    manifest = Path(manifest)
    return manifest.parent / "sidecars" / (manifest.name.removesuffix(".parquet") + ".annotations.parquet")


def write_sidecar(frame: pd.DataFrame, manifest: str | Path) -> Path | None:
    """The line coordinates of the annotations file `build` read, beside the manifest (None without one)."""
    source = frame.attrs.get("annotations")
    if not source:
        return None
    lines = read_annotations(Path(source))
    lines = lines[lines["image_id"].isin(frame["image_id"])].reset_index(drop=True)
    out = annotations_path(manifest)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(out, lambda path: lines.to_parquet(path, index=False))
