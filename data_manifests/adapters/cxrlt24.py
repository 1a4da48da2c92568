"""CXR-LT 2024 (MIMIC-CXR-JPG, 40 findings): the challenge label CSVs -> manifest.

Each CSV has `dicom_id, subject_id, study_id, fpath` (or `path`) and the 40 finding columns; the split of a
file is given as SPLIT=FILE or read from its name (train / val|development / test). image_id is the
dicom_id, the patient is the MIMIC subject_id.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from data_manifests.adapters.common import (
    Source,
    check_patient_splits,
    check_unique,
    parse_labels,
    parse_sources,
    pick_column,
    read_csv,
    require_columns,
    split_from_name,
    view_name,
)
from pipeline.cards import packaged_card


def build(sources: Sequence[str | Source], seed: int = 0) -> pd.DataFrame:
    findings = packaged_card("cxrlt24").label_columns
    parts = []
    for source in parse_sources(sources):
        split = split_from_name(source)
        raw = read_csv(source.path, ["dicom_id", "subject_id"], dtype={"dicom_id": str, "subject_id": str})
        path_column = pick_column(raw, ("fpath", "path"))
        require_columns(raw, [path_column or "fpath", *findings], source.path)
        check_unique(raw, "dicom_id", source.path)
        frame = pd.DataFrame(
            {
                "image_id": raw["dicom_id"].str.strip(),
                "path": raw[path_column].astype(str).str.strip(),
                # The bare MIMIC subject id, as a MIMIC-CXR folder's pNNNNNNNN gives it (corpus leak checks).
                "patient_id": raw["subject_id"].str.strip().str.removesuffix(".0"),
                "split": split,
            }
        )
        if "study_id" in raw:
            frame["study_id"] = raw["study_id"].astype(str)
        view = pick_column(raw, ("ViewPosition", "view", "view_position"))
        if view is not None:
            frame["view"] = raw[view].map(view_name)
        parts.append(pd.concat([frame, parse_labels(raw, findings, source.path, allow_uncertain=True)], axis=1))
    frame = pd.concat(parts, ignore_index=True)
    check_unique(frame, "image_id", "cxrlt24 sources")
    check_patient_splits(frame, "cxrlt24 sources")
    return frame
