"""Shared by families loaded from transformers release folders: their image processor config as chex's
`Preprocessing` (BitImageProcessor, CLIPImageProcessor: shortest_edge resize, centre crop, rescale 1/255,
normalize), following transformers' image_processing_* `resize` / `center_crop` / `rescale` / `normalize`."""

from __future__ import annotations

import logging

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
