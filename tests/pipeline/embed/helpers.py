"""A tiny workspace (grey PNGs + manifest, optionally shards) and a tiny chex checkpoint for embed tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.backbone import BackboneConfig, build_backbone, save_checkpoint
from pipeline.manifest import write_manifest
from pipeline.workspace import Workspace

TINY = BackboneConfig(embed_dim=32, depth=4, num_heads=2, patch_size=8, img_size=32, num_registers=2)


def make_workspace(
    root: Path, dataset: str = "toy", n: int = 12, seed: int = 0, id_prefix: str | None = None
) -> Workspace:
    ws = Workspace(root)
    rng = np.random.default_rng(seed)
    images = ws.images_dir(dataset)
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    prefix = id_prefix or dataset
    for i in range(n):
        pixels = rng.integers(0, 255, size=(40, 36), dtype=np.uint8)
        if i % 3 == 0:
            pixels = (pixels.astype(np.uint16) * 200).astype(np.uint16)  # some 16-bit images
            Image.fromarray(pixels).save(images / f"p{i}.png")
        else:
            Image.fromarray(pixels, mode="L").save(images / f"p{i}.png")
        split = "train" if i < n // 2 else ("val" if i < 3 * n // 4 else "test")
        rows.append({"image_id": f"{prefix}_{i}_0", "path": f"p{i}.png", "patient_id": f"{prefix}{i}", "split": split})
    ws.manifests_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(pd.DataFrame(rows), ws.manifest_path(dataset))
    return ws


def make_shards(ws: Workspace, dataset: str = "toy", per_shard: int = 5) -> list[Path]:
    """Shards of the workspace's images, written by the shard stage itself."""
    from pipeline.shard import shard_dataset
    from pipeline.shard.reader import shard_paths

    out = ws.shards_dir(dataset)
    shard_dataset(
        ws.manifest_path(dataset),
        ws.images_dir(dataset),
        out,
        name=dataset,
        samples_per_shard=per_shard,
        progress=False,
    )
    return shard_paths(out)


def make_checkpoint(ws: Workspace, name: str = "tiny", seed: int = 0, config: BackboneConfig = TINY) -> Path:
    import torch

    torch.manual_seed(seed)
    return save_checkpoint(build_backbone(config), config, ws.checkpoints_dir(name))
