"""The NLM tuberculosis sets (Shenzhen, Montgomery) share a layout: images `<PREFIX>_NNNN_L.png` with the label
L (1 = TB, 0 = normal) in the name, and optional clinical readings `<PREFIX>_NNNN_L.txt` (sex, age, reading)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from data_manifests.adapters.common import Source, paper_fractions, parse_sources, patient_splits
from pipeline.cards import packaged_card
from pipeline.errors import ManifestError

_AGE = re.compile(r"(\d{1,3})\s*(?:yrs?|years?|Y\b)", re.IGNORECASE)
_SEX = re.compile(r"\b(male|female|M|F)\b", re.IGNORECASE)


def build_tb(dataset: str, prefix: str, sources: Sequence[str | Source], seed: int) -> pd.DataFrame:
    """Images found in the source folders/files -> manifest; readings .txt files (anywhere in the sources)
    add `sex`, `age` and `reading` columns."""
    pattern = re.compile(rf"^{prefix}_(\d{{4}})_([01])\.png$", re.IGNORECASE)
    images: list[tuple[Path, Path]] = []  # (file, the folder paths are relative to)
    readings: dict[str, Path] = {}
    for source in parse_sources(sources):
        files = sorted(source.path.rglob("*")) if source.path.is_dir() else [source.path]
        base = source.path if source.path.is_dir() else source.path.parent
        for file in files:
            if pattern.match(file.name):
                images.append((file, base))
            elif file.suffix.lower() == ".txt" and file.name.upper().startswith(prefix):
                readings[file.stem.upper()] = file
            elif not source.path.is_dir():
                raise ManifestError(
                    f"{file}: not a {dataset} image name ({prefix}_NNNN_0.png or {prefix}_NNNN_1.png) "
                    "nor a clinical readings .txt file"
                )
    if not images:
        raise ManifestError(f"{dataset}: no {prefix}_NNNN_L.png images in {[str(s) for s in sources]}")
    names = [f.name for f, _ in images]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ManifestError(f"{dataset}: the same image in several places: {duplicated[:5]}")
    frame = pd.DataFrame(
        {
            "image_id": [f.stem for f, _ in images],
            "path": [f.relative_to(base).as_posix() for f, base in images],
            "patient_id": [f.stem.rsplit("_", 1)[0] for f, _ in images],
            "view": "PA",
            "Tuberculosis": [float(pattern.match(f.name).group(2)) for f, _ in images],
        }
    )
    splits = patient_splits(list(frame["patient_id"]), paper_fractions(packaged_card(dataset)), seed)
    frame.insert(3, "split", frame["patient_id"].map(splits))
    if readings:
        parsed = [_reading(readings.get(stem.upper())) for stem in frame["image_id"]]
        frame["sex"] = [p[0] for p in parsed]
        frame["age"] = [p[1] for p in parsed]
        frame["reading"] = [p[2] for p in parsed]
    return frame


def _reading(path: Path | None) -> tuple[str | None, float, str | None]:
    """(sex, age, free-text reading) from a clinical readings file; missing parts are None/NaN."""
    if path is None:
        return None, float("nan"), None
    text = path.read_text(errors="replace")
    sex_match = _SEX.search(text)
    age_match = _AGE.search(text)
    sex = None if sex_match is None else ("F" if sex_match.group(1).upper().startswith("F") else "M")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reading = lines[-1] if lines else None
    return sex, float(age_match.group(1)) if age_match else float("nan"), reading
