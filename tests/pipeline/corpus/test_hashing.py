from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image

from pipeline.corpus.hashing import content_hash, perceptual_hash, phash_to_int
from pipeline.corpus.nearsearch import hamming
from tests.pipeline.corpus.planted import smooth_image


def _distance(a: str, b: str) -> int:
    return int(hamming(phash_to_int([a]), phash_to_int([b]))[0])


def test_content_hash_is_sha256_of_dtype_shape_and_pixels():
    pixels = smooth_image(0, size=40)
    expected = hashlib.sha256(b"|u1|(40, 40)|" + pixels.tobytes()).hexdigest()
    assert content_hash(pixels) == expected
    assert content_hash(pixels.copy(order="F")) == expected  # memory layout does not matter
    assert content_hash(pixels.astype(">u2")) == content_hash(pixels.astype("<u2"))  # nor byte order
    assert content_hash(pixels.astype(np.uint16)) != expected  # another dtype is another image
    assert content_hash(pixels.reshape(20, 80)) != expected  # and so is another shape
    changed = pixels.copy()
    changed[5, 5] ^= 1
    assert content_hash(changed) != expected


def test_phash_is_close_for_re_encodes_and_far_for_other_images():
    pixels = smooth_image(1, size=256)
    reference = perceptual_hash(pixels)
    assert len(reference) == 16
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    jpeg = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
    resized = np.asarray(Image.fromarray(pixels).resize((240, 240), Image.Resampling.BILINEAR))
    assert _distance(reference, perceptual_hash(pixels.astype(np.uint16) * 257)) == 0
    assert _distance(reference, perceptual_hash(jpeg)) <= 2
    assert _distance(reference, perceptual_hash(resized)) <= 2
    others = [_distance(reference, perceptual_hash(smooth_image(seed, size=256))) for seed in range(2, 12)]
    assert min(others) > 10
    assert perceptual_hash(np.full((50, 50), 7, dtype=np.uint8)) == "0" * 16
