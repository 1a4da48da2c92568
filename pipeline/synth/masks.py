"""Ground-truth anatomy masks of the synthetic cohort: both lungs and the heart, from the anatomy model.

`new_chest` paints soft masks (sigmoid-edged ellipses, the lungs with the heart and mediastinum cut out); a
structure's mask is its soft mask above 0.5. One PNG per image, `masks/<dataset>/<image_id>.png` under the
workspace, holds all structures as bits of a uint8 (bit k set = pixel in STRUCTURES[k]; the heart may overlap
nothing else, the lungs do not overlap each other). The truth file's `mask_path` column points to it (relative
to the workspace root). Written only for data sets whose spec asks (`SynthSpec.masks`), and without drawing
any random number, so the images stay bit-identical with or without masks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.shard_format import decode_png, encode_png
from pipeline.synth.anatomy import Chest

STRUCTURES = ("right_lung", "left_lung", "heart")  # bit 0, 1, 2
THRESHOLD = 0.5
MASKS_DIR = "masks"


def masks_dir(root: Path, dataset: str) -> Path:
    return root / MASKS_DIR / dataset


def relative_mask_path(dataset: str, image_id: str) -> str:
    return f"{MASKS_DIR}/{dataset}/{image_id}.png"


def chest_masks(chest: Chest) -> np.ndarray:
    """The bit-packed uint8 label image of one rendered chest."""
    if chest.heart is None:
        raise ValueError("chest has no heart mask (made outside new_chest)")
    soft = (chest.lung_right, chest.lung_left, chest.heart)
    out = np.zeros(chest.x.shape, dtype=np.uint8)
    for bit, mask in enumerate(soft):
        out |= (mask > THRESHOLD).astype(np.uint8) << bit
    return out


def encode_masks(masks: dict[str, np.ndarray]) -> np.ndarray:
    """Boolean masks by structure name -> the bit-packed uint8 label image."""
    shape = next(iter(masks.values())).shape
    out = np.zeros(shape, dtype=np.uint8)
    for name, mask in masks.items():
        out |= np.asarray(mask, dtype=bool).astype(np.uint8) << STRUCTURES.index(name)
    return out


def decode_masks(packed: np.ndarray) -> dict[str, np.ndarray]:
    """The bit-packed label image -> boolean mask per structure."""
    return {name: (packed >> bit & 1).astype(bool) for bit, name in enumerate(STRUCTURES)}


def write_mask(path: Path, packed: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(encode_png(packed))
    tmp.replace(path)


def read_mask(path: Path) -> dict[str, np.ndarray]:
    return decode_masks(decode_png(Path(path).read_bytes()))
