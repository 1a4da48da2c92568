"""Multi-crop augmentation for grey-scale radiographs (DINOv2's DataAugmentationDINO without colour).

2 global crops (RandomResizedCrop at `global_crops_size`, scale `global_crops_scale`) and N local crops
(`local_crops_size`, `local_crops_scale`), each with a horizontal flip, brightness/contrast jitter (no
saturation, hue or grey-scale conversion: the image is already grey) and Gaussian blur (p 1.0 / 0.1 / 0.5);
the second global crop is solarised with p 0.2. Crops are then replicated to the backbone's channels and
normalised with its mean/std. All randomness comes from the `random.Random` passed in, so a sample's crops are
a function of its seed alone (exact resume, identical streams whatever the number of loader workers).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from pipeline.crop import random_resized_crop_box as crop_box
from pipeline.pretrain.config import CropsConfig


@dataclass
class Crops:
    global_crops: list[torch.Tensor]  # n_global x (C, G, G)
    local_crops: list[torch.Tensor]  # n_local x (C, L, L)


def to_unit_float(pixels: np.ndarray) -> torch.Tensor:
    """(1, H, W) float32 in [0, 1] from a 2-D uint8 (/255) or uint16 (per-image min-max) grey image.

    The same convention as `chex embed`'s preprocessing, so the backbone sees the same grey levels in
    pretraining and evaluation; 16-bit depth is kept through the float conversion.
    """
    if pixels.dtype == np.uint8:
        x = pixels.astype(np.float32) / 255.0
    elif pixels.dtype == np.uint16:
        x = pixels.astype(np.float32)
        lo, hi = float(x.min()), float(x.max())
        x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    else:
        raise ValueError(f"expected uint8 or uint16 pixels, got {pixels.dtype}")
    return torch.from_numpy(x).unsqueeze(0)


class MultiCropAugmentation:
    def __init__(
        self,
        config: CropsConfig,
        mean: tuple[float, ...] = (0.485, 0.456, 0.406),
        std: tuple[float, ...] = (0.229, 0.224, 0.225),
    ) -> None:
        self.config = config
        self.mean = list(mean)
        self.std = list(std)

    def __call__(self, image: torch.Tensor, rng: random.Random) -> Crops:
        """`image`: (1, H, W) float in [0, 1]."""
        c = self.config
        global_blur, global2_blur, local_blur = c.blur_prob
        first = self._view(image, rng, c.global_crops_size, c.global_crops_scale, global_blur, solarize=0.0)
        second = self._view(image, rng, c.global_crops_size, c.global_crops_scale, global2_blur, c.solarize_prob)
        local = [
            self._view(image, rng, c.local_crops_size, c.local_crops_scale, local_blur, solarize=0.0)
            for _ in range(c.local_crops_number)
        ]
        return Crops(global_crops=[first, second], local_crops=local)

    def _view(
        self,
        image: torch.Tensor,
        rng: random.Random,
        size: int,
        scale: tuple[float, float],
        blur_prob: float,
        solarize: float,
    ) -> torch.Tensor:
        top, left, h, w = random_resized_crop_box(image.shape[-2], image.shape[-1], scale, rng)
        x = TF.resized_crop(
            image, top, left, h, w, [size, size], interpolation=InterpolationMode.BICUBIC, antialias=True
        ).clamp_(0, 1)
        if rng.random() < self.config.hflip_prob:
            x = TF.horizontal_flip(x)
        if rng.random() < self.config.jitter_prob:
            x = self._jitter(x, rng)
        if rng.random() < blur_prob:
            sigma = rng.uniform(0.1, 2.0)
            kernel = 2 * math.ceil(3 * sigma) + 1
            x = TF.gaussian_blur(x, [kernel, kernel], [sigma, sigma])
        if rng.random() < solarize:
            x = torch.where(x >= 0.5, 1.0 - x, x)
        x = x.expand(len(self.mean), -1, -1)
        return TF.normalize(x, self.mean, self.std)

    def _jitter(self, x: torch.Tensor, rng: random.Random) -> torch.Tensor:
        b = rng.uniform(max(0.0, 1 - self.config.brightness), 1 + self.config.brightness)
        c = rng.uniform(max(0.0, 1 - self.config.contrast), 1 + self.config.contrast)
        ops = [lambda t: TF.adjust_brightness(t, b), lambda t: TF.adjust_contrast(t, c)]
        if rng.random() < 0.5:  # random order, as torchvision's ColorJitter
            ops.reverse()
        for op in ops:
            x = op(x)
        return x


def random_resized_crop_box(
    height: int, width: int, scale: tuple[float, float], rng: random.Random, ratio: tuple[float, float] = (3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
    """(top, left, h, w) as torchvision's RandomResizedCrop.get_params, drawn from `rng`."""
    return crop_box(height, width, scale, ratio, uniform=rng.uniform, randint=rng.randint)
