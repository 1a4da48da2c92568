"""CheXmask's run-length encoded masks (CheXmask-Database, DataPostprocessing/utils.py `get_mask_from_RLE`).

Convention, as CheXmask's own decoder reads it: the mask is flattened row-major (C order: along a row first),
the RLE string is space-separated pairs "start length" with 1-based starts, and the image is `Height` x `Width`
(columns of the CSV). Each CSV row is one image: an image-id column whose name depends on the source data set
(ChestX-ray8 "Image Index", CheXpert "Path", MIMIC-CXR-JPG "dicom_id", PadChest "ImageID", VinDr-CXR "image_id"),
"Dice RCA (Mean)" (the Reverse Classification Accuracy quality estimate; CheXmask recommends keeping >= 0.7),
"Left Lung", "Right Lung", "Heart" (RLE strings; "Left"/"Right" are the patient's sides), "Height", "Width".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import ManifestError

CHEXMASK_STRUCTURES = {"Right Lung": "right_lung", "Left Lung": "left_lung", "Heart": "heart"}
ID_COLUMNS = ("Image Index", "Path", "dicom_id", "ImageID", "image_id", "ImageId", "Image ID")
QUALITY_COLUMN = "Dice RCA (Mean)"
MIN_DICE_RCA = 0.7


def decode_rle(rle: str | float | None, height: int, width: int) -> np.ndarray:
    """A CheXmask RLE string -> boolean (height, width) mask; empty / NaN -> all False."""
    mask = np.zeros(height * width, dtype=bool)
    if rle is None or (isinstance(rle, float) and np.isnan(rle)) or not str(rle).strip():
        return mask.reshape(height, width)
    runs = np.asarray(str(rle).split(), dtype=np.int64)
    if len(runs) % 2:
        raise ValueError(f"RLE has an odd number of values ({len(runs)}): expected start/length pairs")
    starts, lengths = runs[0::2] - 1, runs[1::2]
    if len(starts) and (starts.min() < 0 or (starts + lengths).max() > height * width):
        raise ValueError(f"RLE runs fall outside a {height}x{width} image")
    for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
        mask[start : start + length] = True
    return mask.reshape(height, width)


def encode_rle(mask: np.ndarray) -> str:
    """The inverse of `decode_rle` (CheXmask's `get_RLE_from_mask`): row-major, 1-based start/length pairs."""
    pixels = np.concatenate([[0], np.asarray(mask, dtype=bool).ravel().astype(np.int8), [0]])
    runs = np.flatnonzero(pixels[1:] != pixels[:-1]) + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(int(x)) for x in runs)


def read_chexmask(
    path: str | Path, id_column: str | None = None, min_dice: float | None = MIN_DICE_RCA
) -> pd.DataFrame:
    """A CheXmask CSV (or .csv.gz) -> image_id, height, width, dice_rca_mean and one RLE column per structure
    (right_lung, left_lung, heart), keeping rows with Dice RCA (Mean) >= `min_dice` (None keeps all)."""
    path = Path(path)
    try:
        raw = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not a readable CheXmask CSV ({exc})") from exc
    if id_column is None:
        id_column = next((c for c in ID_COLUMNS if c in raw.columns), None)
    required = [id_column or "<image id>", "Height", "Width", *CHEXMASK_STRUCTURES]
    if min_dice is not None:
        required.append(QUALITY_COLUMN)
    missing = [c for c in required if c not in raw.columns]
    if missing:
        raise ManifestError(f"{path}: missing CheXmask column(s) {missing}; found {list(raw.columns)}")
    frame = pd.DataFrame(
        {
            "image_id": raw[id_column].astype(str),
            "height": raw["Height"].astype(np.int64),
            "width": raw["Width"].astype(np.int64),
            "dice_rca_mean": raw[QUALITY_COLUMN].astype(np.float64) if QUALITY_COLUMN in raw else np.nan,
        }
    )
    for column, name in CHEXMASK_STRUCTURES.items():
        frame[name] = raw[column]
    if min_dice is not None:
        frame = frame[frame["dice_rca_mean"] >= min_dice].reset_index(drop=True)
    return frame


def chexmask_masks(row: pd.Series) -> dict[str, np.ndarray]:
    """One row of `read_chexmask` -> boolean mask per structure."""
    height, width = int(row["height"]), int(row["width"])
    return {name: decode_rle(row[name], height, width) for name in CHEXMASK_STRUCTURES.values()}
