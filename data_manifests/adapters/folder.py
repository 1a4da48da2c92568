"""A folder of images (a pretraining source) -> manifest: every PNG/JPEG/DICOM under a root, split 'train'.

Hidden and system entries are skipped, and the count is logged: names starting with '.' (`.DS_Store`, the `._x.jpeg`
AppleDouble files a Mac writes beside each image) and folders such as `__MACOSX` (`image_files`).

View: the DICOM ViewPosition tag, else file-name hints (`_PA`, `-ap`, `lateral`, `frontal`). Patient: the DICOM
PatientID, else the nearest folder named like a patient (`p10000032`, `patient00001`: the digits, as MIMIC-CXR
and CheXpert label files give them), else the image's folder (the file name for images at the root).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pandas as pd

from data_manifests.adapters.common import view_from_filename, view_name
from pipeline.errors import ManifestError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom"}
SYSTEM_NAMES = frozenset({"__MACOSX", "@eaDir", "$RECYCLE.BIN", "System Volume Information", "Thumbs.db"})
_PATIENT_FOLDER = re.compile(r"^(?:p|patient)(\d+)$", re.IGNORECASE)


def is_system_entry(name: str) -> bool:
    """A hidden or system file/folder name (`.DS_Store`, `._x.jpeg`, `__MACOSX`, ...): never an image or a class."""
    return name.startswith(".") or name in SYSTEM_NAMES


def image_files(root: Path) -> tuple[list[Path], list[Path]]:
    """(image files, skipped hidden/system files) under `root`, recursively, sorted; hidden and system folders
    are not entered (their files count as skipped)."""
    images, skipped = [], []
    for folder, dirs, files in os.walk(root):
        base = Path(folder)
        for name in [d for d in dirs if is_system_entry(d)]:
            dirs.remove(name)
            skipped += [Path(f, n) for f, _, ns in os.walk(base / name) for n in ns]
        dirs.sort()
        for name in files:
            if is_system_entry(name):
                skipped.append(base / name)
            elif Path(name).suffix.lower() in IMAGE_SUFFIXES:
                images.append(base / name)
    return sorted(images), sorted(skipped)


def skipped_text(skipped: list[Path], root: Path) -> str:
    """'skipped 3 hidden/system file(s) under ROOT (.DS_Store, ._*, __MACOSX): not images' ('' when none)."""
    if not skipped:
        return ""
    kinds = set()
    for path in skipped:
        part = next((p for p in path.relative_to(root).parts if is_system_entry(p)), path.name)
        kinds.add("._*" if part.startswith("._") else part)
    shown = ", ".join(k if len(k) < 40 else k[:37] + "..." for k in sorted(kinds)[:6])
    return f"skipped {len(skipped)} hidden/system file(s) under {root} ({shown}): not images"


def build_folder(root: str | Path, source: str) -> pd.DataFrame:
    """Walk `root` recursively; `source` names the corpus source (the manifest's `source` column)."""
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"--root {root}: not a folder")
    files, skipped = image_files(root)
    if skipped:
        log.warning("%s", skipped_text(skipped, root))
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
