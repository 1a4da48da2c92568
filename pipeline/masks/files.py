"""Mask files of the public lung / heart segmentation sets, indexed by image id.

- JSRT SCR (van Ginneken et al., 2006): `<root>/.../masks/<structure>/<JPCxxNNN>.gif` with structure folders
  "right lung", "left lung", "heart", "right clavicle", "left clavicle" (1024 x 1024, the JSRT images halved).
- Montgomery: `<root>/ManualMask/leftMask/MCUCXR_NNNN_L.png` and `.../rightMask/...` (the patient's sides).
- Shenzhen (Stirenko et al. / Jaeger et al. lung masks): `<root>/.../CHNCXR_NNNN_L_mask.png`, both lungs in
  one mask.
Masks are binary images; any non-zero pixel is inside.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.errors import ManifestError

SCR_STRUCTURES = {
    "right lung": "right_lung",
    "left lung": "left_lung",
    "heart": "heart",
    "right clavicle": "right_clavicle",
    "left clavicle": "left_clavicle",
}
MONTGOMERY_STRUCTURES = {"rightmask": "right_lung", "leftmask": "left_lung"}
_SHENZHEN = re.compile(r"^(CHNCXR_\d{4}_\d)_mask\.png$", re.IGNORECASE)
_MONTGOMERY = re.compile(r"^(MCUCXR_\d{4}_\d)\.png$", re.IGNORECASE)
_SCR = re.compile(r"^(JPC(?:LN|NN)\d{3})\.gif$", re.IGNORECASE)

MaskIndex = dict[str, dict[str, Path]]


def read_binary_mask(path: str | Path) -> np.ndarray:
    """A mask image (PNG, GIF; palette or grey) -> boolean array, non-zero = inside."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L")) > 0
    except OSError as exc:
        raise ManifestError(f"{path}: not a readable mask image ({exc})") from exc


def read_indexed(index: MaskIndex, image_id: str) -> dict[str, np.ndarray]:
    """The masks of one image of an index, by structure; a ManifestError naming what is missing."""
    if image_id not in index:
        raise ManifestError(f"no mask files for image {image_id!r} ({len(index)} images indexed)")
    masks = {name: read_binary_mask(path) for name, path in sorted(index[image_id].items())}
    shapes = {m.shape for m in masks.values()}
    if len(shapes) > 1:
        raise ManifestError(f"masks of {image_id!r} differ in size: {sorted(shapes)}")
    return masks


def index_scr(root: str | Path) -> MaskIndex:
    """JSRT SCR: image id (JPCLN001) -> structure -> .gif path."""
    hint = "SCR .gif masks under <structure>/ folders (e.g. 'left lung/JPCLN001.gif')"
    return _index_by_folder(root, "*.gif", _SCR, SCR_STRUCTURES, hint)


def index_montgomery(root: str | Path) -> MaskIndex:
    """Montgomery: image id (MCUCXR_0001_0) -> right_lung / left_lung -> .png path."""
    hint = "ManualMask/leftMask/ and ManualMask/rightMask/ PNGs"
    return _index_by_folder(root, "*.png", _MONTGOMERY, MONTGOMERY_STRUCTURES, hint)


def _index_by_folder(root: str | Path, glob: str, name: re.Pattern, structures: dict[str, str], hint: str) -> MaskIndex:
    """Files under `root` whose name matches `name` (group 1: the image id), the structure named by their folder."""
    index: MaskIndex = {}
    for path in Path(root).rglob(glob):
        match = name.match(path.name)
        structure = structures.get(path.parent.name.lower())
        if match and structure:
            _add(index, match.group(1).upper(), structure, path)
    return _non_empty(index, root, hint)


def index_shenzhen(root: str | Path) -> MaskIndex:
    """Shenzhen: image id (CHNCXR_0001_0) -> lungs -> *_mask.png path."""
    index: MaskIndex = {}
    for path in Path(root).rglob("*.png"):
        match = _SHENZHEN.match(path.name)
        if match:
            _add(index, match.group(1).upper(), "lungs", path)
    return _non_empty(index, root, "CHNCXR_NNNN_L_mask.png files")


def _add(index: MaskIndex, image_id: str, structure: str, path: Path) -> None:
    known = index.setdefault(image_id, {})
    if structure in known:
        raise ManifestError(f"two {structure} masks for {image_id}: {known[structure]} and {path}")
    known[structure] = path


def _non_empty(index: MaskIndex, root: str | Path, expected: str) -> MaskIndex:
    if not index:
        raise ManifestError(f"{root}: no mask files found; expected {expected}")
    return index
