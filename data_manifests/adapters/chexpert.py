"""CheXpert: train.csv / valid.csv (and a labelled test csv) -> manifest.

Columns `Path, Sex, Age, Frontal/Lateral, AP/PA, <14 findings>`; labels 1 / 0 / -1 (uncertain) / blank.
The patient id is the `patientNNNNN` part of the path. valid.csv is the val split, or the test split when no
test file is given (the probe then carves its validation split out of train by patient).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from data_manifests.adapters.common import (
    Source,
    add_note,
    check_patient_splits,
    check_unique,
    csv_lines,
    parse_labels,
    parse_sources,
    read_csv,
    sex_code,
    split_from_name,
)
from pipeline.cards import packaged_card
from pipeline.errors import ManifestError
from pipeline.manifest import rows_of

log = logging.getLogger(__name__)
_PATIENT = re.compile(r"patient(\d+)")
_ROOT_PREFIX = re.compile(r"^CheXpert-v[\d.]+(-small)?/")


def build(sources: Sequence[str | Source], seed: int = 0) -> pd.DataFrame:
    card = packaged_card("chexpert")
    findings = card.label_columns
    parts = []
    for source in parse_sources(sources):
        split = split_from_name(source)
        raw = read_csv(source.path, ["Path", *findings], dtype={"Path": str})
        parts.append(_frame(raw, source, split, findings))
    frame = pd.concat(parts, ignore_index=True)
    splits = set(frame["split"])
    if "test" not in splits and "val" in splits:
        frame.loc[frame["split"] == "val", "split"] = "test"
        add_note(
            frame,
            f"no test file: valid.csv ({int((frame['split'] == 'test').sum()):,} images) is the test split; the "
            "probe carves its validation split out of train by patient",
        )
    elif splits == {"train"}:
        add_note(
            frame,
            f"only training files given: all {len(frame):,} images are in train and there is no test split; "
            "pass valid.csv too (it becomes the test split) before probing",
        )
    check_unique(frame, "path", "chexpert sources")
    check_patient_splits(frame, "chexpert sources")
    return frame


def _frame(raw: pd.DataFrame, source: Source, split: str, findings: list[str]) -> pd.DataFrame:
    paths = raw["Path"].fillna("").astype(str).str.strip()
    patient = paths.str.extract(_PATIENT, expand=False)
    if patient.isna().any():
        raise ManifestError(
            f"{source.path}: no patientNNNNN in the Path at "
            f"{rows_of(raw, patient.isna().to_numpy(), 'Path', csv_lines(raw))}"
        )
    check_unique(raw.assign(Path=paths), "Path", source.path)
    stem = paths.str.replace(_ROOT_PREFIX, "", regex=True).str.replace(r"\.[A-Za-z]+$", "", regex=True)
    frame = pd.DataFrame(
        {
            "image_id": "chexpert_" + stem.str.replace("/", "_", regex=False),
            "path": paths,
            "patient_id": patient,  # the digits of patientNNNNN, as `chex manifest folder` gives them
            "split": split,
            "view": _views(raw),
        }
    )
    if "Sex" in raw.columns:
        frame["sex"] = raw["Sex"].map(sex_code)
    if "Age" in raw.columns:
        frame["age"] = pd.to_numeric(raw["Age"], errors="coerce")
    labels = parse_labels(raw, findings, source.path, allow_uncertain=True)
    return pd.concat([frame, labels], axis=1)


def _views(raw: pd.DataFrame) -> np.ndarray:
    n = len(raw)
    frontal = raw["Frontal/Lateral"].astype(str).str.strip().str.lower() if "Frontal/Lateral" in raw else None
    projection = raw["AP/PA"].astype(str).str.strip().str.upper() if "AP/PA" in raw else pd.Series([""] * n)
    views = np.full(n, None, dtype=object)
    if frontal is None:
        return views
    views[(frontal == "lateral").to_numpy()] = "LATERAL"
    is_frontal = (frontal == "frontal").to_numpy()
    views[is_frontal] = "FRONTAL"
    for value in ("AP", "PA"):
        views[is_frontal & (projection == value).to_numpy()] = value
    return views
