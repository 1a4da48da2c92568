"""Image preprocessing as the paper's evaluation takes it, plus CheXFound's probe-time augmentation as views.

View 0 is the plain evaluation view, as the backbone family declares it (pipeline/backbone/families/):
grey -> [0, 1] -> `resize` policy -> 3 channels -> mean/std normalisation. Policies: "short_side+center_crop"
(the short side to `resize_to` (default: the input size), then a centred square; DINOv2's eval transform and
transformers' shortest_edge + center_crop), "pad_square+resize" (pad the long side on black to a square, then
resize; CheXzero), "resize" (warp to the square; ConvNeXt at >= 384 px). Interpolation "bilinear+antialias"
(chex's default), "bicubic+antialias" (PIL-like bicubic, as transformers/open_clip/timm eval transforms),
"bicubic" (no antialias). Mean/std are on the [0, 1] scale (a family whose authors normalise 0-255 values
declares theirs divided by 255: the same arithmetic).
Views 1..K-1 are RandomResizedCrop(scale 0.75-1) + horizontal flip, each seeded by
(image_id, view) so a rerun embeds the same pixels.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from pipeline.crop import random_resized_crop_box
from pipeline.imageio import DECODE_POLICY

RESIZE_POLICIES = ("short_side+center_crop", "pad_square+resize", "resize")
INTERPOLATIONS = {
    "bilinear+antialias": (TF.InterpolationMode.BILINEAR, True),
    "bicubic+antialias": (TF.InterpolationMode.BICUBIC, True),
    "bicubic": (TF.InterpolationMode.BICUBIC, False),
}


@dataclass(frozen=True)
class Preprocessing:
    """Everything that turns stored pixels into the backbone's input; recorded in the store's attributes."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str = "short_side+center_crop"
    interpolation: str = "bilinear+antialias"
    uint16: str = "per-image min-max to [0,1]"
    uint8: str = "/255"
    train_view_scale: tuple[float, float] = (0.75, 1.0)
    train_view_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    train_view_hflip: float = 0.5
    decode: str = DECODE_POLICY  # how source files became pixels (pipeline/imageio.py)
    resize_to: int | None = None  # "short_side+center_crop": short side before the crop (None: image_size)

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_POLICIES:
            raise ValueError(f"resize policy {self.resize!r} is not one of {RESIZE_POLICIES}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {self.interpolation!r} is not one of {sorted(INTERPOLATIONS)}")

    def to_dict(self) -> dict:
        """The store's `preprocessing` attribute (an identity key: unset optional fields are left out, so stores
        written before them still match)."""
        d = asdict(self)
        if d["resize_to"] is None:
            del d["resize_to"]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def __call__(self, pixels: np.ndarray, image_id: str = "", view: int = 0) -> torch.Tensor:
        """(3, S, S) float32 network input for one grey image and view."""
        x = to_unit_float(pixels)
        x = self.eval_view(x) if view == 0 else self.augmented(x, view_seed(image_id, view))
        x = x.expand(3, -1, -1)
        return TF.normalize(x, list(self.mean), list(self.std))

    def eval_view(self, x: torch.Tensor) -> torch.Tensor:
        """(1, S, S) from (1, H, W) in [0, 1] by the resize policy."""
        mode, antialias = INTERPOLATIONS[self.interpolation]
        size = self.image_size
        if self.resize == "pad_square+resize":
            h, w = x.shape[-2:]
            side = max(h, w)
            top, left = (side - h) // 2, (side - w) // 2
            x = TF.pad(x, [left, top, side - w - left, side - h - top], fill=0.0)
            return TF.resize(x, [size, size], interpolation=mode, antialias=antialias)
        if self.resize == "resize":
            return TF.resize(x, [size, size], interpolation=mode, antialias=antialias)
        x = TF.resize(x, [self.resize_to or size], interpolation=mode, antialias=antialias)
        return TF.center_crop(x, [size, size])

    def augmented(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        """RandomResizedCrop + horizontal flip drawn from a generator seeded by `seed`."""
        g = torch.Generator().manual_seed(seed)
        top, left, h, w = _crop_params(x.shape[-2], x.shape[-1], self.train_view_scale, self.train_view_ratio, g)
        x = TF.resized_crop(x, top, left, h, w, [self.image_size, self.image_size], antialias=True)
        if torch.rand((), generator=g) < self.train_view_hflip:
            x = TF.horizontal_flip(x)
        return x


def to_unit_float(pixels: np.ndarray) -> torch.Tensor:
    """(1, H, W) float32 in [0, 1] from a 2-D uint8 (/255) or uint16 (per-image min-max) grey image."""
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        pixels = pixels[..., :3].mean(axis=-1).astype(pixels.dtype)
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {pixels.shape}")
    if pixels.dtype == np.uint8:
        x = torch.from_numpy(pixels.astype(np.float32) / 255.0)
    else:
        a = pixels.astype(np.float32)
        lo, hi = float(a.min()), float(a.max())
        x = torch.from_numpy((a - lo) / (hi - lo) if hi > lo else np.zeros_like(a))
    return x.unsqueeze(0)


def view_seed(image_id: str, view: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{image_id}\0{view}".encode()).digest()[:8], "little") & (2**63 - 1)


def _crop_params(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], g: torch.Generator
) -> tuple[int, int, int, int]:
    """torchvision RandomResizedCrop.get_params with an explicit generator."""
    return random_resized_crop_box(
        height,
        width,
        scale,
        ratio,
        uniform=lambda a, b: float(torch.empty(1).uniform_(a, b, generator=g)),
        randint=lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g)),
    )
