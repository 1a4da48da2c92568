"""Tiny workspaces of square grey images (so every family's resize is the identity at its input size) and the
store's tokens read back, for the per-family tests that compare chex's stored tokens with the original library."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from PIL import Image

from pipeline.manifest import write_manifest
from pipeline.workspace import Workspace


def square_workspace(root: Path, sides: dict[str, int], n: int = 3, seed: int = 0) -> Workspace:
    """One data set per entry of `sides` (name -> image side), `n` uint8 grey images each."""
    ws = Workspace(root)
    rng = np.random.default_rng(seed)
    ws.manifests_dir.mkdir(parents=True, exist_ok=True)
    for name, side in sides.items():
        images = ws.images_dir(name)
        images.mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(n):
            pixels = rng.integers(0, 256, size=(side, side), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(images / f"p{i}.png")
            rows.append({"image_id": f"{name}_{i}", "path": f"p{i}.png", "patient_id": f"{name}{i}", "split": "train"})
        write_manifest(pd.DataFrame(rows), ws.manifest_path(name))
    return ws


def images(ws: Workspace, dataset: str) -> dict[str, Image.Image]:
    frame = pd.read_parquet(ws.manifest_path(dataset))
    return {r.image_id: Image.open(ws.images_dir(dataset) / r.path).convert("L") for r in frame.itertuples()}


def stored_tokens(store_path: Path) -> tuple[list[str], dict[str, np.ndarray], dict]:
    """(image ids in row order, {part: float32 array}, store attributes)."""
    from pipeline.store.reader import FeatureStore

    store = FeatureStore.open(store_path)
    group = zarr.open_group(store_path, mode="r")
    ids = list(store.image_ids)
    parts = {p: np.asarray(group[p][: len(ids)], dtype=np.float32) for p in ("cls", "patch", "registers") if p in group}
    return ids, parts, dict(group.attrs)


def processed(processor, pil_images: list[Image.Image], side: int):
    """A transformers image processor's pixel tensor for `pil_images` at `side` (shortest edge and centre crop)."""
    return processor(
        [im.convert("RGB") for im in pil_images],
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        return_tensors="pt",
    )["pixel_values"]
