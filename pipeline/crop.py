"""The random-resized-crop box (torchvision's RandomResizedCrop.get_params), with the random draws injected.

Embedding (stored augmented views, torch.Generator) and pretraining (multi-crop, random.Random) draw from
different generators; both get torchvision's box rule from here.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def random_resized_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    uniform: Callable[[float, float], float],
    randint: Callable[[int, int], int],
) -> tuple[int, int, int, int]:
    """(top, left, h, w): up to 10 draws of area share and log aspect ratio, else a centre crop.

    uniform(a, b) draws a float in [a, b); randint(lo, hi) an int in [lo, hi], both ends included.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * uniform(*scale)
        aspect = math.exp(uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return randint(0, height - h), randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def eval_crop_box(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """(top, left, h, w) in the original image of what the eval view keeps: the short side resized to `size`,
    then a centred `size` square (torchvision's resize + center_crop), mapped back to original pixels."""
    short, long = (height, width) if height <= width else (width, height)
    new_long = int(size * long / short)  # torchvision's rounding of the long side
    offset = round((new_long - size) / 2.0) * long / new_long
    side_long = size * long / new_long
    if height <= width:
        return 0, round(offset), height, round(side_long)
    return round(offset), 0, round(side_long), width
