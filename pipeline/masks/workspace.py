"""A data set's anatomy masks in the workspace: `masks/<dataset>/<image file>.png`, one per image.

Each PNG holds every structure of the image as a bit of a uint8 (bit k = `structures.json`'s k-th name), at the
mask source's own resolution (the same field of view as the image). `structures.json` ({"structures": [...]})
names the bits; a folder without it is a synthetic cohort's (pipeline/synth/masks.py: right_lung, left_lung,
heart). The synthetic cohort writes these folders, the mask adapters (pipeline/masks/import_masks.py) convert
JSRT SCR, Montgomery, Shenzhen and CheXmask masks into them. A card's segmentation task reads the structures it
names; `lungs` is both lungs as one, from right_lung | left_lung where the source tells them apart.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pipeline.atomic import write_bytes_atomic, write_text_atomic
from pipeline.errors import ManifestError
from pipeline.shard_format import decode_png, encode_png
from pipeline.synth.masks import MASKS_DIR
from pipeline.synth.masks import STRUCTURES as SYNTH_STRUCTURES

STRUCTURES_FILE = "structures.json"
MAX_BITS = 8
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def masks_folder(root: Path, dataset: str) -> Path:
    return Path(root) / MASKS_DIR / dataset


def mask_file(root: Path, dataset: str, image_id: str) -> Path:
    """The mask PNG of an image (an id with characters unsafe in a file name gets a hash suffix)."""
    image_id = str(image_id)
    name = _SAFE.sub("_", image_id)
    if name != image_id:
        name += "-" + hashlib.sha256(image_id.encode()).hexdigest()[:10]
    return masks_folder(root, dataset) / f"{name}.png"


def stored_structures(root: Path, dataset: str) -> tuple[str, ...]:
    """The bit names of a data set's mask files."""
    path = masks_folder(root, dataset) / STRUCTURES_FILE
    if not path.is_file():
        return SYNTH_STRUCTURES
    return tuple(json.loads(path.read_text())["structures"])


def read_structures(root: Path, dataset: str, image_id: str, wanted: Sequence[str]) -> np.ndarray:
    """(K, H, W) boolean masks of `wanted`, in that order; ManifestError naming the file or structure missing."""
    path = mask_file(root, dataset, image_id)
    if not path.is_file():
        raise ManifestError(
            f"no mask of image {image_id!r} of data set {dataset!r} at {path}; write the data set's masks with "
            f"`chex manifest masks {dataset} ...` (README: Segmentation)"
        )
    packed = decode_png(path.read_bytes())
    bits = stored_structures(root, dataset)
    return np.stack([_structure(packed, bits, name, path) for name in wanted])


def write_image_masks(root: Path, dataset: str, image_id: str, masks: Mapping[str, np.ndarray]) -> Path:
    """Write one image's boolean masks (same shape) as its bit-packed PNG; the folder's structures.json fixes
    the bit order at the first write and a later write may only use names it has (or add new ones)."""
    bits = _claim_bits(root, dataset, list(masks))
    shapes = {np.shape(m) for m in masks.values()}
    if len(shapes) != 1:
        raise ManifestError(f"masks of image {image_id!r} differ in size: {sorted(shapes)}")
    packed = np.zeros(shapes.pop(), dtype=np.uint8)
    for name, mask in masks.items():
        packed |= np.asarray(mask, dtype=bool).astype(np.uint8) << bits.index(name)
    path = mask_file(root, dataset, image_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, encode_png(packed))
    return path


def _claim_bits(root: Path, dataset: str, names: list[str]) -> tuple[str, ...]:
    path = masks_folder(root, dataset) / STRUCTURES_FILE
    bits = list(stored_structures(root, dataset)) if path.is_file() else []
    new = [n for n in names if n not in bits]
    if new:
        bits += new
        if len(bits) > MAX_BITS:
            raise ManifestError(f"{path}: at most {MAX_BITS} structures per data set, got {bits}")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps({"structures": bits}, indent=2))
    return tuple(bits)


def _structure(packed: np.ndarray, bits: tuple[str, ...], name: str, path: Path) -> np.ndarray:
    if name in bits:
        return (packed >> bits.index(name) & 1).astype(bool)
    if name == "lungs" and {"right_lung", "left_lung"} <= set(bits):
        return _structure(packed, bits, "right_lung", path) | _structure(packed, bits, "left_lung", path)
    raise ManifestError(f"{path}: no {name!r} mask (the file holds {list(bits)})")
