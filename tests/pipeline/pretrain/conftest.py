"""Small shards written with webdataset's TarWriter in the shard contract (key, png, json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from pipeline.shard_format import encode_png


def write_toy_shards(folder: Path, n_shards: int = 2, per_shard: int = 10, seed: int = 0) -> list[Path]:
    """Radiograph-sized-down grey images, alternately 8- and 16-bit, with a bright disc at a random place."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for s in range(n_shards):
        path = folder / f"toy-{s:06d}.tar"
        with wds.TarWriter(str(path)) as writer:
            for i in range(per_shard):
                yy, xx = np.mgrid[:48, :40]
                cy, cx = rng.integers(8, 40), rng.integers(8, 32)
                img = 0.3 * rng.random((48, 40)) + ((yy - cy) ** 2 + (xx - cx) ** 2 < 36)
                img = img / img.max()
                pixels = (img * 65535).astype(np.uint16) if i % 2 else (img * 255).astype(np.uint8)
                key = f"toy_{s}_{i}"
                writer.write(
                    {"__key__": key, "png": encode_png(pixels), "json": json.dumps({"image_id": key}).encode()}
                )
        paths.append(path)
    return paths


@pytest.fixture
def toy_shards(tmp_path: Path) -> list[Path]:
    return write_toy_shards(tmp_path / "shards")
