"""The table checks every evaluation shares: required columns, one run per table, test/val rows, the pivot to
(image x output) matrices, sampling clusters and the results.parquet schema."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.errors import PredictionsError
from pipeline.stats.metrics import UNCERTAIN_LABEL

RUN_COLUMNS = ("dataset", "backbone", "head", "label_fraction")
RESULT_COLUMNS = (*RUN_COLUMNS, "output", "metric", "estimate", "ci_low", "ci_high", "n", "n_pos", "defined", "note")
PREDICTION_COLUMNS = ("image_id", "output", "score", "label")
SURVIVAL_COLUMNS = ("patient_id", "endpoint", "risk_score", "time", "event")


class Table:
    """Test predictions pivoted to (image x output) label and score matrices."""

    def __init__(self, image_ids: list[str], outputs: list[str], labels: np.ndarray, scores: np.ndarray):
        self.image_ids, self.outputs, self.labels, self.scores = image_ids, outputs, labels, scores


def pivot(frame: pd.DataFrame, what: str) -> Table:
    """(image x output) matrices from long rows, in first-seen order. Works on integer codes of the two key
    columns (no copy of the table: a 200k-image x 40-output file is 8M rows)."""
    row, image_ids = _codes(frame["image_id"])
    col, outputs = _codes(frame["output"])
    cell = row.astype(np.int64) * max(len(outputs), 1) + col
    if np.bincount(cell, minlength=len(image_ids) * len(outputs)).max(initial=0) > 1:
        order = np.argsort(cell, kind="stable")
        repeats = order[1:][cell[order[1:]] == cell[order[:-1]]]  # rows whose (image, output) came earlier
        first = int(repeats.min())
        raise PredictionsError(
            f"{what}: {len(repeats)} duplicate (image_id, output) rows, e.g. ({image_ids[row[first]]}, "
            f"{outputs[col[first]]}); one run's predictions hold one row per test image and output"
        )
    del cell
    labels = np.full((len(image_ids), len(outputs)), np.nan)
    scores = np.full((len(image_ids), len(outputs)), np.nan)
    labels[row, col] = _numeric(frame, "label", what)
    scores[row, col] = _numeric(frame, "score", what)
    labels[labels == UNCERTAIN_LABEL] = np.nan  # uncertain: masked, the rule of every statistic (binary_labels)
    known = ~np.isnan(labels)
    odd = known & (labels != 0) & (labels != 1)
    if odd.any():
        i, k = np.argwhere(odd)[0]
        raise PredictionsError(
            f"{what}: label {labels[i, k]:g} for ({image_ids[i]}, {outputs[k]}); labels must be 1, 0, "
            "-1 (uncertain, masked) or NaN"
        )
    missing = known & np.isnan(scores)
    if missing.any():
        i, k = np.argwhere(missing)[0]
        raise PredictionsError(
            f"{what}: {int(missing.sum())} labelled rows have no score, e.g. ({image_ids[i]}, {outputs[k]})"
        )
    return Table(image_ids, outputs, labels, scores)


def require(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise PredictionsError(f"the {what} table lacks columns {missing}; it has {list(frame.columns)}")


def run_identity(frame: pd.DataFrame) -> dict[str, object]:
    identity: dict[str, object] = {}
    for column in RUN_COLUMNS:
        if column not in frame.columns:
            identity[column] = np.nan if column == "label_fraction" else None
            continue
        values = pd.unique(frame[column].dropna())
        if len(values) > 1:
            raise PredictionsError(
                f"the table mixes {len(values)} values of {column} ({', '.join(map(str, values[:4]))}); "
                "evaluate one run at a time"
            )
        value = values[0] if len(values) else None
        identity[column] = value.item() if isinstance(value, np.generic) else value
    return identity


def model_name(frame: pd.DataFrame) -> str:
    identity = run_identity(frame)
    parts = [str(identity[c]) for c in ("backbone", "head") if identity[c] is not None]
    fraction = identity["label_fraction"]
    if fraction is not None and not (isinstance(fraction, float) and np.isnan(fraction)) and fraction != 1:
        parts.append(f"label_fraction={fraction:g}")
    return "/".join(parts) or "unnamed run"


def split_rows(frame: pd.DataFrame, split: str, fallback_all: bool) -> pd.DataFrame | None:
    """The rows of `split` (the frame itself, not a copy, when every row is of it); with `fallback_all`, every
    row when the frame has no split column or no row of `split`."""
    if "split" not in frame.columns:
        return frame if fallback_all else None
    chosen = (frame["split"] == split).to_numpy()
    if chosen.all():
        return frame
    if chosen.any():
        return frame[chosen]
    return frame if fallback_all else None


def clusters_of(test: pd.DataFrame, image_ids: list[str], column: str | None) -> tuple[np.ndarray | None, str]:
    if column is None or column not in test.columns:
        return None, "image"
    first = test.drop_duplicates("image_id")
    patients = pd.Series(first[column].to_numpy(), index=first["image_id"].astype(str)).reindex(image_ids)
    # An image without a patient id is its own cluster.
    patients = patients.astype(object).where(patients.notna(), pd.Series(image_ids, index=image_ids, dtype=object))
    patients = patients.astype(str).to_numpy()
    n_clusters = len(np.unique(patients))
    if n_clusters == len(image_ids):
        return None, "image"
    return patients, f"{column} ({n_clusters} clusters of {len(image_ids)} images)"


def results_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    frame["defined"] = frame["defined"].astype(bool)
    frame[["n", "n_pos"]] = frame[["n", "n_pos"]].astype("int64")
    return frame


def _codes(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Integer code per row and the distinct values as text, in first-seen order (values are compared as text,
    so 7 and "7" are one image)."""
    codes, uniques = pd.factorize(values.astype(str) if values.dtype.kind in "biufc" else values, sort=False)
    if (codes < 0).any():  # a missing key: make it its own text, as astype(str) would
        codes, uniques = pd.factorize(values.astype(str), sort=False)
    text = [str(v) for v in uniques]
    if len(set(text)) < len(text):  # mixed types that print alike (1 and "1"): factorize their text instead
        codes, uniques = pd.factorize(values.astype(str), sort=False)
        text = [str(v) for v in uniques]
    return codes.astype(np.int32 if len(text) < 2**31 else np.int64, copy=False), text


def _numeric(frame: pd.DataFrame, column: str, what: str) -> np.ndarray:
    """`column` as float64; PredictionsError naming the values that are not numbers (never read as missing)."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna()
    if bad.any():
        shown = sorted({repr(v) for v in frame[column][bad].unique()[:5]})
        raise PredictionsError(
            f"{what}: column {column!r} holds {int(bad.sum())} values that are not numbers ({', '.join(shown)}); "
            + ("labels must be 1, 0 or empty" if column == "label" else "scores must be numbers")
        )
    return values.to_numpy(dtype=np.float64)
