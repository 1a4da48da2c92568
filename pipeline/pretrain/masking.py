"""Block masking of global-crop patches for the iBOT loss (BEiT's generator, as DINOv2 uses it).

A masked image gets rectangles of patches (aspect 0.3-3.3, at least 4 patches each) until its target count
is reached; targets for the masked half of a batch are stratified over U(min_ratio, max_ratio).
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch


class BlockMaskGenerator:
    def __init__(
        self, grid: int, min_num_patches: int = 4, max_num_patches: int | None = None, min_aspect: float = 0.3
    ) -> None:
        self.height = self.width = grid
        self.n_patches = grid * grid
        self.min_num_patches = min_num_patches
        self.max_num_patches = max_num_patches if max_num_patches is not None else self.n_patches
        self.log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))

    def __call__(self, n_masked: int, rng: random.Random) -> np.ndarray:
        """A (grid, grid) bool mask with at most `n_masked` patches set (fewer only when no block fits)."""
        mask = np.zeros((self.height, self.width), dtype=bool)
        count = 0
        while count < n_masked:
            budget = min(n_masked - count, self.max_num_patches)
            delta = self._add_block(mask, budget, rng)
            if delta == 0:
                break
            count += delta
        return mask

    def _add_block(self, mask: np.ndarray, budget: int, rng: random.Random) -> int:
        for _ in range(10):
            area = rng.uniform(self.min_num_patches, budget)
            aspect = math.exp(rng.uniform(*self.log_aspect))
            h = round(math.sqrt(area * aspect))
            w = round(math.sqrt(area / aspect))
            if w < self.width and h < self.height:
                top = rng.randint(0, self.height - h)
                left = rng.randint(0, self.width - w)
                window = mask[top : top + h, left : left + w]
                new = h * w - int(window.sum())
                if 0 < new <= budget:
                    window[:] = True
                    return new
        return 0


def batch_masks(
    n_images: int,
    grid: int,
    rng: random.Random,
    sample_probability: float = 0.5,
    ratio_min_max: tuple[float, float] = (0.1, 0.5),
) -> torch.Tensor:
    """(n_images, grid*grid) bool masks: `int(n_images * sample_probability)` images masked, the rest not.

    The masked images' targets are drawn one per stratum of linspace(min, max) (DINOv2's collate), then the
    order of all masks is shuffled.
    """
    n_patches = grid * grid
    generator = BlockMaskGenerator(grid, max_num_patches=int(0.5 * n_patches))
    n_masked_images = int(n_images * sample_probability)
    edges = np.linspace(*ratio_min_max, n_masked_images + 1)
    masks = [
        generator(int(n_patches * rng.uniform(edges[i], edges[i + 1])), rng).reshape(-1) for i in range(n_masked_images)
    ]
    masks += [np.zeros(n_patches, dtype=bool)] * (n_images - n_masked_images)
    rng.shuffle(masks)
    return torch.from_numpy(np.stack(masks))
