"""Training targets: each image's masks on the model's input square (pipeline/masks/align.py), at `size`.

Targets are shares (the fraction of a target pixel inside the structure), (N, K, T, T). T is the input size, at
most `PIXELS_PER_PATCH` target pixels per stored patch (the decoder's output grid) and at most `MAX_TARGET_SIZE`:
the demo's 7 x 7 grid at 112 px trains at 28, a ViT-L/16 at 512 px (32 x 32 patches) at 128. The loss is computed
at T, and on a CPU it is most of a step's cost: at 56 (8 px per patch) the demo's linear head spent 1.2 s a step
in BCE and its gradient, under load. T bounds how finely the targets show an outline (the truth through 28 px and
back scores Dice 0.985-0.992 against itself on the demo's JSRT masks, 0.998-0.999 through 56), not the scoring:
scores are computed at the mask's own resolution from the head's logits (pipeline/segmentation/score.py).
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
PIXELS_PER_PATCH = 4


def store_preprocessing(attrs: dict) -> Preprocessing:
    """The `Preprocessing` a store's `preprocessing` attribute records (lists back to tuples)."""
    data = {k: tuple(v) if isinstance(v, list) else v for k, v in attrs["preprocessing"].items()}
    fields = Preprocessing.__dataclass_fields__
    return Preprocessing(**{k: v for k, v in data.items() if k in fields})


def target_size(pre: Preprocessing, grid: tuple[int, int] | None = None, cap: int = MAX_TARGET_SIZE) -> int:
    """The targets' side: the input size, at most PIXELS_PER_PATCH per patch of the stored `grid` (the decoder's
    output grid) and at most `cap`."""
    side = min(pre.image_size, cap)
    return min(side, PIXELS_PER_PATCH * max(grid)) if grid else side


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
