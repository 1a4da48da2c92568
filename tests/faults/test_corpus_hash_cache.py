"""The corpus hash cache never serves the hash of a file's old content: it is keyed by what can change."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.corpus.hashing import content_hash, hash_manifest
from pipeline.imageio import read_image
from tests.faults.conftest import grey_image


def test_an_image_replaced_after_hashing_is_hashed_again(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    root.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(grey_image(rng)).save(root / name)
    frame = pd.DataFrame({"image_id": ["a", "b", "c"], "path": ["a.png", "b.png", "c.png"]})
    first = hash_manifest(frame, root, tmp_path / "cache", progress=False)
    assert first.content_hash.nunique() == 3

    stat = os.stat(root / "b.png")
    shutil.copyfile(root / "a.png", root / "b.png")  # b now holds a's pixels (a leak the cache must not hide)
    Image.fromarray(grey_image(rng)).save(root / "c.png")  # c rewritten, its mtime set 1 s past the old one
    os.utime(root / "c.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = hash_manifest(frame, root, tmp_path / "cache", progress=False)
    assert again.content_hash[1] == first.content_hash[0]
    assert again.content_hash[2] == content_hash(read_image(root / "c.png")) != first.content_hash[2]
    assert again.content_hash[0] == first.content_hash[0]
