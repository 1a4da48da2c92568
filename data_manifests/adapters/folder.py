"""A folder of images (a pretraining source) -> manifest: every PNG/JPEG/DICOM under a root, split 'train'.

View: the DICOM ViewPosition tag, else file-name hints (`_PA`, `-ap`, `lateral`, `frontal`). Patient: the DICOM
PatientID, else the nearest folder named like a patient (`p10000032`, `patient00001`: the digits, as MIMIC-CXR
and CheXpert label files give them), else the image's folder (the file name for images at the root).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from data_manifests.adapters.common import view_from_filename, view_name
from pipeline.errors import ManifestError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom"}
_PATIENT_FOLDER = re.compile(r"^(?:p|patient)(\d+)$", re.IGNORECASE)


def build_folder(root: str | Path, source: str) -> pd.DataFrame:
    """Walk `root` recursively; `source` names the corpus source (the manifest's `source` column)."""
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"--root {root}: not a folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ManifestError(f"--root {root}: no PNG, JPEG or DICOM files found (suffixes {sorted(IMAGE_SUFFIXES)})")
    rows = []
    unreadable = 0
    for file in files:
        rel = file.relative_to(root)
        view, patient = None, None
        if file.suffix.lower() in (".dcm", ".dicom"):
            header = _dicom_header(file)
            if header is None:
                unreadable += 1
            else:
                view, patient = header
        view = view or view_from_filename(file.stem)
        patient = patient or _patient_from_folders(rel)
        rows.append((rel.as_posix(), rel.as_posix(), patient, view))
    if unreadable:
        log.warning(
            "%d DICOM file(s) under %s have an unreadable header (kept; shard will quarantine them)", unreadable, root
        )
    frame = pd.DataFrame(rows, columns=["image_id", "path", "patient_id", "view"])
    frame.insert(3, "split", "train")
    frame["source"] = source
    return frame


def _dicom_header(path: Path) -> tuple[str | None, str | None] | None:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["ViewPosition", "PatientID"])
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return None
    patient = str(dataset.get("PatientID", "") or "").strip() or None
    return view_name(dataset.get("ViewPosition", None)), patient


def _patient_from_folders(rel: Path) -> str:
    for folder in reversed(rel.parts[:-1]):
        match = _PATIENT_FOLDER.match(folder)
        if match:
            return match.group(1)
    return rel.parent.as_posix() if len(rel.parts) > 1 else rel.stem
