"""Pieces every adapter shares: reading official files with clear errors, split assignment, label parsing,
view names, image-path checks. Every user-caused problem is a ManifestError naming the file and rows."""

from __future__ import annotations

import csv
import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.cards import DatasetCard
from pipeline.errors import ManifestError
from pipeline.manifest import MAX_EXAMPLES, SPLITS, rows_of

VIEWS = ("PA", "AP", "LATERAL", "FRONTAL")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")


@dataclass(frozen=True)
class Source:
    """An official file given on the command line, optionally with the split it holds (`test=test.csv`)."""

    path: Path
    split: str | None = None


def parse_source(spec: str | Path | Source) -> Source:
    """`FILE` or `SPLIT=FILE` (SPLIT one of train/val/test)."""
    if isinstance(spec, Source):
        return spec
    text = str(spec)
    name, sep, rest = text.partition("=")
    if sep and name in SPLITS:
        return Source(Path(rest), name)
    return Source(Path(text))


def parse_sources(specs: Iterable[str | Path | Source]) -> list[Source]:
    sources = [parse_source(s) for s in specs]
    if not sources:
        raise ManifestError("no source files given: pass --source FILE (repeatable)")
    for source in sources:
        if not source.path.exists():
            raise ManifestError(f"{source.path}: no such file or folder")
    return sources


def split_from_name(source: Source, allowed: Sequence[str] = SPLITS) -> str:
    """The split a file holds: given explicitly, else from its name (train / valid|val|dev / test)."""
    if source.split is not None:
        return source.split
    name = source.path.name.lower()
    if "test" in name:
        split = "test"
    elif "train" in name:  # before val: NIH's train_val_list.txt is the training list
        split = "train"
    elif re.search(r"valid|(^|[^a-z])val([^a-z]|$)|dev", name):
        split = "val"
    else:
        raise ManifestError(
            f"{source.path}: cannot tell which split this file holds from its name; "
            f"pass it as SPLIT=FILE, e.g. --source test={source.path}"
        )
    if split not in allowed:
        raise ManifestError(f"{source.path}: a {split} file is not expected here (splits: {', '.join(allowed)})")
    return split


SOURCE_ATTR = "chex_csv_source"  # DataFrame.attrs: (file, data rows) a frame was read from, for `csv_lines`


def read_csv(path: Path, required: Sequence[str], **kwargs) -> pd.DataFrame:
    """Read a CSV, raising ManifestError naming the file and any missing columns. The frame remembers its file, so
    messages can give each row's line (`csv_lines`)."""
    try:
        frame = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not a readable CSV file ({exc})") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    require_columns(frame, required, path)
    frame.attrs[SOURCE_ATTR] = (str(path), len(frame))
    return frame


def csv_lines(frame: pd.DataFrame) -> np.ndarray | None:
    """Each row's line in the CSV `read_csv` read it from, as a spreadsheet numbers it (the header is line 1), by
    the row's index label: for that frame or one filtered or de-duplicated from it (never re-indexed). None when
    unknown; messages then give 0-based rows. Read from the file only when a message needs it."""
    source = frame.attrs.get(SOURCE_ATTR)
    if source is None:
        return None
    path, n_rows = source
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    starts = _record_lines(path, stat.st_mtime_ns, stat.st_size)
    labels = frame.index.to_numpy()
    if starts is None or len(starts) != n_rows or labels.dtype.kind not in "iu":
        return None
    if len(labels) and (labels.min() < 0 or labels.max() >= n_rows):
        return None
    return starts[labels]


@functools.lru_cache(maxsize=4)
def _record_lines(path: str, mtime_ns: int, size: int) -> np.ndarray | None:
    """The first line of each data record of a CSV (blank lines skipped, as pandas does; a quoted field may span
    lines). None when the file cannot be read as CSV here."""
    starts, end = [], 0
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            for record in reader:
                if record:
                    starts.append(end + 1)
                end = reader.line_num
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return np.asarray(starts[1:], dtype=np.int64)  # the first record is the header


def require_columns(frame: pd.DataFrame, required: Sequence[str], path: Path | str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")


def pick_column(frame: pd.DataFrame, aliases: Sequence[str]) -> str | None:
    """The first of `aliases` present (case-insensitive), else None."""
    lower = {c.lower(): c for c in frame.columns}
    for alias in aliases:
        if alias.lower() in lower:
            return lower[alias.lower()]
    return None


def parse_labels(frame: pd.DataFrame, columns: Sequence[str], path: Path | str, allow_uncertain: bool) -> pd.DataFrame:
    """Label columns as floats 1/0/-1/NaN; blanks are NaN; anything else is a ManifestError naming the lines."""
    out = pd.DataFrame(index=frame.index)
    allowed = (1.0, 0.0, -1.0) if allow_uncertain else (1.0, 0.0)
    for column in columns:
        raw = frame[column]
        blank = raw.isna() | (raw.astype(str).str.strip() == "")
        values = pd.to_numeric(raw.where(~blank), errors="coerce")
        bad = (~blank) & (values.isna() | ~values.isin(allowed))
        if bad.any():
            raise ManifestError(
                f"{path}: unknown label value(s) in column {column!r} at "
                f"{rows_of(frame, bad.to_numpy(), column, csv_lines(frame))}; "
                f"expected {', '.join(str(int(a)) for a in allowed)} or blank"
            )
        out[column] = values.astype(np.float64)
    return out


def check_unique(frame: pd.DataFrame, column: str, path: Path | str) -> None:
    duplicated = frame[column].duplicated(keep=False)
    if duplicated.any():
        raise ManifestError(
            f"{path}: duplicate {column} at {rows_of(frame, duplicated.to_numpy(), column, csv_lines(frame))}"
        )


def check_patient_splits(frame: pd.DataFrame, sources: str) -> None:
    """A patient in two splits of the official files is the files' fault: say which patients and rows."""
    per_patient = frame.groupby("patient_id", sort=False)["split"].nunique()
    leaking = per_patient[per_patient > 1]
    if len(leaking):
        mask = frame["patient_id"].isin(leaking.index).to_numpy()
        raise ManifestError(
            f"{sources}: {len(leaking)} patient(s) appear in more than one split "
            f"(e.g. {list(leaking.index[:MAX_EXAMPLES])}) at {rows_of(frame, mask, 'split', csv_lines(frame))}"
        )


def paper_fractions(card: DatasetCard) -> dict[str, float]:
    total = sum(card.paper_splits.values())
    if not total:
        return {"train": 0.7, "val": 0.1, "test": 0.2}
    return {k: v / total for k, v in card.paper_splits.items()}


def patient_splits(patients: Sequence[str], fractions: dict[str, float], seed: int) -> dict[str, str]:
    """A seeded patient-level split with the given proportions (sorted ids, so file order does not matter)."""
    unique = sorted(set(patients))
    order = np.random.default_rng(seed).permutation(len(unique))
    names = [s for s in SPLITS if fractions.get(s, 0) > 0]
    bounds = np.round(np.cumsum([fractions[s] for s in names]) / sum(fractions[s] for s in names) * len(unique))
    out: dict[str, str] = {}
    start = 0
    for name, stop in zip(names, bounds.astype(int), strict=True):
        for i in order[start:stop]:
            out[unique[i]] = name
        start = stop
    return out


def view_name(value: object) -> str | None:
    """A DICOM ViewPosition or label-file value as PA / AP / LATERAL / FRONTAL (None when unknown)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip().upper()
    if text in ("PA", "POSTERO_ANTERIOR", "POSTEROANTERIOR"):
        return "PA"
    if text in ("AP", "AP SUPINE", "AP_SUPINE", "ANTERO_POSTERIOR", "ANTEROPOSTERIOR"):
        return "AP"
    if text in ("LL", "RL", "LAT", "LATERAL", "LLD", "RLD"):
        return "LATERAL"
    if text == "FRONTAL":
        return "FRONTAL"
    return None


def view_from_filename(name: str) -> str | None:
    """File-name hints: `_PA`, `-ap`, `lateral`, `lat`, `frontal` as separate words."""
    tokens = {t for t in re.split(r"[^a-z]+", name.lower()) if t}
    for token, view in (("lateral", "LATERAL"), ("lat", "LATERAL"), ("ll", "LATERAL"), ("pa", "PA"), ("ap", "AP")):
        if token in tokens:
            return view
    return "FRONTAL" if "frontal" in tokens else None


def missing_images(frame: pd.DataFrame, root: Path) -> tuple[int, list[str]]:
    """Paths of the manifest missing under `root`: (count, first few)."""
    missing = [p for p in frame["path"].astype(str) if not (root / p).is_file()]
    return len(missing), missing[:MAX_EXAMPLES]


def relocate_paths(frame: pd.DataFrame, root: Path) -> int:
    """Fix paths that official files give as bare names (CXR14 ships its images in images_NNN/ folders, JSRT
    lists .IMG names that users convert to .png): a missing path is replaced by the one file under `root`
    with that name (or that stem and an image suffix). Returns how many paths changed; paths that name
    folders are never changed."""
    paths = frame["path"].astype(str)
    # Only bare names: a listed path with folders (CheXpert's patientN/studyM/view1_frontal.jpg) is exact.
    missing = np.array(["/" not in p and not (root / p).is_file() for p in paths])
    if not missing.any():
        return 0
    by_name: dict[str, list[str]] = {}
    for file in root.rglob("*"):
        if file.is_file():
            rel = file.relative_to(root).as_posix()
            by_name.setdefault(file.name.lower(), []).append(rel)
            if file.suffix.lower() in IMAGE_SUFFIXES:
                by_name.setdefault(file.stem.lower() + "\0stem", []).append(rel)
    changed = 0
    new = paths.to_numpy().copy()
    for i in np.flatnonzero(missing):
        name = Path(new[i]).name.lower()
        hits = by_name.get(name) or by_name.get(Path(name).stem + "\0stem") or []
        if len(hits) == 1:
            new[i] = hits[0]
            changed += 1
    frame["path"] = new
    return changed


def sex_code(value: object) -> str | None:
    """Sex as every adapter writes it: "F", "M", or None (unknown), from M/F/Male/Female in any case."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip().upper()
    return {"F": "F", "FEMALE": "F", "M": "M", "MALE": "M"}.get(text)


def add_note(frame: pd.DataFrame, note: str) -> None:
    """Record a choice the adapter made; `make_manifest` logs it as a warning and writes it into the card."""
    frame.attrs.setdefault("notes", []).append(note)
