"""Training targets: each image's masks on the model's input square (pipeline/masks/align.py), at `size`.

Targets are stored as uint8 shares (0-255 = the fraction of a target pixel inside the structure), (N, K, T, T):
at the demo's 112 px and 3 structures 37 kB per image. T is the input size, capped at `MAX_TARGET_SIZE`: a
ViT-L/16 at 512 px has a 32 x 32 patch grid, and 4 target pixels per patch side keep its targets at 49 kB per
image instead of 786 kB; scores are computed at the mask's own resolution whatever T is (pipeline/segmentation/
score.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pipeline.embed.preprocess import Preprocessing
from pipeline.masks.align import to_input
from pipeline.masks.workspace import read_structures

MAX_TARGET_SIZE = 128


def store_preprocessing(attrs: dict) -> Preprocessing:
    """The `Preprocessing` a store's `preprocessing` attribute records (lists back to tuples)."""
    data = {k: tuple(v) if isinstance(v, list) else v for k, v in attrs["preprocessing"].items()}
    fields = Preprocessing.__dataclass_fields__
    return Preprocessing(**{k: v for k, v in data.items() if k in fields})


def target_size(pre: Preprocessing, cap: int = MAX_TARGET_SIZE) -> int:
    return min(pre.image_size, cap)


def aligned_targets(
    root: Path, dataset: str, image_ids: Sequence[str], structures: Sequence[str], pre: Preprocessing, size: int
) -> torch.Tensor:
    """(N, K, size, size) uint8 targets of `image_ids` (K = len(structures)) on the model's input square."""
    out = torch.empty((len(image_ids), len(structures), size, size), dtype=torch.uint8)
    for n, image_id in enumerate(image_ids):
        masks = read_structures(root, dataset, str(image_id), structures)
        out[n] = (to_input(masks, pre, size) * 255.0).round_().to(torch.uint8)
    return out


def prior_map(targets: torch.Tensor, positions: np.ndarray) -> torch.Tensor:
    """(K, T, T) the mean target of `positions` (the training images): the prior row's probability map."""
    return targets[torch.as_tensor(np.asarray(positions))].float().mean(dim=0) / 255.0
