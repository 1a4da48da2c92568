"""The test image under an attention map, as the model saw it: found where the pixels are, cropped like the
store's preprocessing.

Where: `chex report --image-root` (DIR, or DATASET=DIR), the image root `chex manifest` recorded in the card
(else the workspace's images/<ds>/), then the data set's shards. What: the store records its preprocessing;
for the eval view ("short_side+center_crop") the map covers the centred square of the short side (a smaller one
when the family resizes the short side past its input size, `resize_to`), not the whole radiograph; for
"pad_square+resize" (CheXzero) the whole radiograph padded on black to a square.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.crop import eval_crop_box
from pipeline.errors import ChexError
from pipeline.imageio import read_image

log = logging.getLogger(__name__)

EVAL_RESIZE = "short_side+center_crop"
PAD_SQUARE = "pad_square+resize"
MAX_SIDE = 1024


def store_preprocessing(workspace, backbone: str) -> dict | None:
    """The preprocessing recorded in the store's attributes (None when there is no store to ask)."""
    if workspace is None:
        return None
    try:
        meta = json.loads((workspace.features_dir(backbone) / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    return (meta.get("attributes") or {}).get("preprocessing")


def crop_as_model_saw(pixels: np.ndarray, preprocessing: dict | None) -> tuple[np.ndarray, bool]:
    """(pixels of the region the eval view covers, True) or (pixels unchanged, False) when that is unknown."""
    box = model_box(pixels.shape[0], pixels.shape[1], preprocessing)
    if box is None:
        return pixels, False
    top, left, h, w = box
    if top < 0 or left < 0:  # the model saw the whole image padded on black to a square
        padded = np.zeros((h, w, *pixels.shape[2:]), dtype=pixels.dtype)
        padded[-top : -top + pixels.shape[0], -left : -left + pixels.shape[1]] = pixels
        return padded, True
    return pixels[top : top + h, left : left + w], True


def model_box(height: int, width: int, preprocessing: dict | None) -> tuple[int, int, int, int] | None:
    """(top, left, h, w) in a height x width image's pixels of the square the eval view covers (top or left
    negative where the model saw it padded on black), None when the preprocessing is unknown. The patch grid of
    an attention map spans this box."""
    if not preprocessing or not preprocessing.get("image_size"):
        return None
    if preprocessing.get("resize") == PAD_SQUARE:
        side = max(height, width)
        return -((side - height) // 2), -((side - width) // 2), side, side
    if preprocessing.get("resize") != EVAL_RESIZE:
        return None
    size = int(preprocessing["image_size"])
    resize_to = int(preprocessing.get("resize_to") or size)
    if resize_to == size:
        return eval_crop_box(height, width, size)
    # short side resized to `resize_to`, then a centred `size` square: a centred square of short·size/resize_to
    side = round(min(height, width) * size / resize_to)
    return (height - side) // 2, (width - side) // 2, side, side


class ImageFinder:
    """Looks up a data set's test images by id: image roots first, then shards."""

    def __init__(self, workspace, dataset: str, image_roots: dict[str, Path] | None = None) -> None:
        self.workspace, self.dataset = workspace, dataset
        roots = image_roots or {}
        self.roots = [Path(r) for r in (roots.get(dataset), roots.get("")) if r is not None]
        self.paths: dict[str, str] = {}
        if workspace is not None and workspace.manifest_path(dataset).is_file():
            self.roots.append(Path(workspace.image_root(dataset)))
            frame = pd.read_parquet(workspace.manifest_path(dataset), columns=["image_id", "path"])
            self.paths = dict(zip(frame["image_id"].astype(str), frame["path"].astype(str), strict=True))
        self.searched: list[str] = [str(r) for r in self.roots]

    def pixels(self, image_id: str) -> np.ndarray | None:
        """Grey pixels of `image_id` (long side at most MAX_SIDE), or None when no root or shard has it."""
        rel = self.paths.get(image_id)
        for root in self.roots if rel is not None else []:
            if (root / rel).is_file():
                try:
                    return np.asarray(read_image(root / rel, max_side=MAX_SIDE), dtype=np.float32)
                except ChexError as exc:  # unreadable: try the shards, else draw the map alone
                    log.warning("%s", exc)
        return self._from_shards(image_id)

    def _from_shards(self, image_id: str) -> np.ndarray | None:
        if self.workspace is None:
            return None
        from pipeline.shard.reader import iter_samples, shard_paths

        folder = self.workspace.shards_dir(self.dataset)
        if not folder.is_dir():
            return None
        self.searched.append(str(folder))
        try:
            files = shard_paths(folder)
            holder = _shard_of(folder, image_id)
            for sample in iter_samples([f for f in files if holder is None or f.name == holder]):
                if sample.image_id == image_id:
                    return np.asarray(sample.pixels, dtype=np.float32)
        except ChexError as exc:
            log.warning("%s", exc)
        return None


def _shard_of(folder: Path, image_id: str) -> str | None:
    """The shard file holding `image_id`, from the shard set's manifest.parquet (None: search them all)."""
    path = folder / "manifest.parquet"
    if not path.is_file():
        return None
    try:
        frame = pd.read_parquet(path, columns=["image_id", "shard"])
    except (OSError, ValueError, KeyError):
        return None
    rows = frame[frame["image_id"].astype(str) == image_id]
    return Path(str(rows["shard"].iloc[0])).name if len(rows) else None
