"""The shard contract (docs/architecture.md, "Contracts": shards) shared by writer and readers.

Per sample: `__key__` = sanitised image_id, `png` = the image as a lossless PNG (8-bit "L" or 16-bit "I;16"
grey-scale, keeping the source's depth), `json` = the manifest fields of the row (original image_id included)
plus `pixel_sha256`, the content key of the decoded pixels (`pixel_digest`; shards written before it lack it).
Shard files are `{name}-{index:06d}.tar`; `index.parquet` lists shards with sample counts and sha256.
"""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image

SHARD_PATTERN = "{name}-{index:06d}.tar"
INDEX_FILE = "index.parquet"
QUARANTINE_FILE = "quarantine.csv"
IMAGE_EXT = "png"
META_EXT = "json"
PIXEL_KEY = "pixel_sha256"
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")


def pixel_digest(pixels: np.ndarray) -> str:
    """The content key of a decoded grey image: sha256 of its dtype, shape and little-endian pixel bytes, so the
    same pixels give the same key whatever file format or path they came from."""
    import hashlib

    array = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<"))
    digest = hashlib.sha256(f"{array.dtype.str}:{'x'.join(map(str, array.shape))}:".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def sanitize_key(image_id: str) -> str:
    """webdataset splits keys at dots and treats '/' as folders: map every unsafe character to '_' and
    append a short hash when anything changed, so distinct ids stay distinct."""
    safe = _UNSAFE.sub("_", image_id)
    if safe == image_id:
        return safe
    import hashlib

    return f"{safe}_{hashlib.sha1(image_id.encode()).hexdigest()[:8]}"


def encode_png(pixels: np.ndarray) -> bytes:
    """Lossless PNG of a 2-D uint8 or uint16 grey image."""
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {pixels.shape}")
    if pixels.dtype == np.uint8:
        image = Image.fromarray(pixels)
    elif pixels.dtype == np.uint16:
        image = Image.fromarray(pixels.astype("<u2"))  # -> mode "I;16"
    else:
        raise ValueError(f"expected uint8 or uint16 pixels, got {pixels.dtype}")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """Inverse of encode_png: a 2-D uint8 or uint16 array."""
    with Image.open(io.BytesIO(data)) as image:
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            return np.asarray(image, dtype=np.uint16) if image.mode != "I" else np.asarray(image).astype(np.uint16)
        if image.mode != "L":
            image = image.convert("L")
        return np.asarray(image, dtype=np.uint8)
