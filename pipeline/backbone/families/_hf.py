"""Shared by the families' converters: a transformers folder's image processor config as chex's
`Preprocessing` (BitImageProcessor, CLIPImageProcessor: shortest_edge resize, centre crop, rescale 1/255,
normalize), following transformers' image_processing_* `resize` / `center_crop` / `rescale` / `normalize`; and
the key mapping of foreign state dicts into timm's layout (`renamed`, `fuse_qkv`)."""

from __future__ import annotations

import logging
import re

from pipeline.errors import CheckpointError

log = logging.getLogger(__name__)


def preprocessing_from(processor: dict | None, img_size: int, config_size: int, where: str):
    """The folder's BitImageProcessor settings as chex's Preprocessing at input size `img_size`."""
    from pipeline.backbone.config import IMAGENET_MEAN, IMAGENET_STD
    from pipeline.embed.preprocess import Preprocessing

    if processor is None:
        log.warning("%s has no preprocessor_config.json: bicubic resize to %d, ImageNet mean/std", where, img_size)
        return Preprocessing(img_size, IMAGENET_MEAN, IMAGENET_STD, interpolation="bicubic+antialias")
    if not processor.get("do_center_crop", True) or not processor.get("do_resize", True):
        raise CheckpointError(f"{where}/preprocessor_config.json: only resize + centre crop is supported")
    if processor.get("do_rescale", True) and abs(float(processor.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        raise CheckpointError(f"{where}/preprocessor_config.json: rescale_factor must be 1/255")
    crop = processor.get("crop_size") or {}
    crop_side = int(crop.get("height", config_size)) if isinstance(crop, dict) else int(crop)
    size = processor.get("size") or {}
    short = int(size.get("shortest_edge", crop_side)) if isinstance(size, dict) else int(size)
    if isinstance(crop, dict) and crop.get("height") != crop.get("width"):
        raise CheckpointError(f"{where}/preprocessor_config.json: a non-square crop {crop} is not supported")
    resample = {2: "bilinear+antialias", 3: "bicubic+antialias"}.get(int(processor.get("resample", 3)))
    if resample is None:
        raise CheckpointError(f"{where}/preprocessor_config.json: resample {processor.get('resample')} not supported")
    resize_to = round(short * img_size / crop_side)
    return Preprocessing(
        img_size,
        tuple(processor.get("image_mean", IMAGENET_MEAN)),
        tuple(processor.get("image_std", IMAGENET_STD)),
        interpolation=resample,
        resize_to=None if resize_to == img_size else resize_to,
    )


def renamed(key: str, renames: tuple[tuple[str, str], ...]) -> str:
    """`key` under the first (pattern, replacement) of `renames` that matches it (unchanged when none does)."""
    for pattern, repl in renames:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    return key


def fuse_qkv(out: dict, qkv: dict) -> dict:
    """`out` with each layer's separate q/k/v projections ({(layer, weight|bias): {0|1|2: (key, tensor)}}) as
    timm's one `blocks.<layer>.attn.qkv.*`; an incomplete triple keeps its own keys, so the strict load lists it."""
    import torch

    for (layer, kind), parts in qkv.items():
        if sorted(parts) == [0, 1, 2]:
            out[f"blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts[i][1] for i in range(3)], dim=0)
        else:
            out.update(dict(parts.values()))
    return out
