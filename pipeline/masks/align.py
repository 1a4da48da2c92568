"""Masks aligned with what the model saw: the store's recorded preprocessing applied to a mask, and back.

A mask covers the same field of view as its image (at its own resolution: JSRT's SCR masks are the images
halved), so it goes through the same resize policy as the pixels did (`Preprocessing.eval_view`, the very
function embed applied: short side + centre crop, pad to square + resize, or warp) to become a training target
on the model's input square. The way back, `InputMap`, places the input square on the mask's pixel grid, so a
prediction is scored at the mask's resolution on exactly the mask pixels whose centres the input covered
(a centre crop leaves the rest out; padding adds pixels that are no mask pixel and are never scored).

Only the mask's own size enters the map; a mask whose aspect ratio matches its image's but whose size differs
lands within torchvision's integer rounding of the resized long side (under one input pixel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch.nn import functional as F

from pipeline.embed.preprocess import Preprocessing


@dataclass(frozen=True)
class InputMap:
    """Where the model's `size` x `size` input lies on a `height` x `width` mask: per axis, the input coordinate
    u = scale * y - offset of the mask coordinate y (continuous: pixel i spans [i, i + 1), input pixel j spans
    [j, j + 1), so u in [0, size) is inside the input)."""

    height: int
    width: int
    size: int
    scale: tuple[float, float]
    offset: tuple[float, float]

    def covered(self) -> tuple[slice, slice]:
        """(rows, cols) of the mask pixels whose centres fall inside the input square."""
        return tuple(  # type: ignore[return-value]
            _inside(n, self.scale[a], self.offset[a], self.size) for a, n in enumerate((self.height, self.width))
        )

    def sample(self, maps: torch.Tensor) -> torch.Tensor:
        """(K, T, T) maps on the input square (any T) -> (K, h, w) bilinear values at the covered mask pixels."""
        rows, cols = self.covered()
        grid_y = self._normalised(0, np.arange(rows.start, rows.stop))
        grid_x = self._normalised(1, np.arange(cols.start, cols.stop))
        yy, xx = torch.meshgrid(grid_y, grid_x, indexing="ij")
        grid = torch.stack([xx, yy], dim=-1).unsqueeze(0)  # (1, h, w, 2), x first
        out = F.grid_sample(maps.float()[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out.squeeze(0)

    def _normalised(self, axis: int, pixels: np.ndarray) -> torch.Tensor:
        u = self.scale[axis] * (pixels + 0.5) - self.offset[axis]  # input coordinate of each pixel centre
        return torch.as_tensor(2.0 * u / self.size - 1.0, dtype=torch.float32)


def input_map(pre: Preprocessing, height: int, width: int) -> InputMap:
    """The map of `pre`'s eval view (pipeline/embed/preprocess.py) for a `height` x `width` image or mask."""
    size = pre.image_size
    if pre.resize == "resize":
        return InputMap(height, width, size, (size / height, size / width), (0.0, 0.0))
    if pre.resize == "pad_square+resize":
        side = max(height, width)
        top, left = (side - height) // 2, (side - width) // 2
        s = size / side
        return InputMap(height, width, size, (s, s), (-top * s, -left * s))
    new_h, new_w = _short_side_size(height, width, pre.resize_to or size)
    crop_top, crop_left = round((new_h - size) / 2.0), round((new_w - size) / 2.0)  # torchvision center_crop
    return InputMap(height, width, size, (new_h / height, new_w / width), (float(crop_top), float(crop_left)))


def to_input(masks: np.ndarray, pre: Preprocessing, size: int | None = None) -> torch.Tensor:
    """(K, H, W) boolean masks -> (K, size, size) float32 in [0, 1] on the model's input square: the share of
    each input pixel inside the structure, by the same resize policy and interpolation as the image's pixels,
    then (when `size` differs from the input's) an antialiased bilinear resize to `size`."""
    x = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32))
    x = pre.eval_view(x)
    if size is not None and size != pre.image_size:
        x = TF.resize(x, [size, size], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return x.clamp_(0.0, 1.0)


def _short_side_size(height: int, width: int, short: int) -> tuple[int, int]:
    """torchvision's resize([short]): the short side to `short`, the long side int(short * long / short side)."""
    if height <= width:
        return short, int(short * width / height)
    return int(short * height / width), short


def _inside(n: int, scale: float, offset: float, size: int) -> slice:
    u = scale * (np.arange(n) + 0.5) - offset
    inside = np.flatnonzero((u >= 0) & (u < size))
    return slice(int(inside[0]), int(inside[-1]) + 1) if len(inside) else slice(0, 0)
