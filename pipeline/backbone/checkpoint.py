"""chex checkpoints (tensors-only `model.pt` + `config.json`) and loading foreign ones safely.

`load_backbone` accepts a chex checkpoint folder, or a single weights file of a ViT family (DINOv2/CheXFound,
timm, MAE; architecture inferred from tensor shapes); any family loads through `registry.open_backbone`.
Files are read with `torch.load(weights_only=True)` (pipeline/backbone/weights.py): a checkpoint that needs
pickled code is refused. Unknown or missing keys are an error listing them.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from pipeline.backbone.config import BackboneConfig
from pipeline.backbone.converters import StateDict, convert
from pipeline.backbone.found import inspect_path
from pipeline.backbone.weights import read_weights  # noqa: F401  (re-exported)
from pipeline.errors import CheckpointError

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"


def save_checkpoint(model: nn.Module, config: BackboneConfig, directory: str | Path) -> Path:
    """Write `model.pt` (tensors-only state dict) and `config.json` into `directory`, atomically.

    Returns the folder. The config is written first and the weights renamed into place last, so a folder
    with a `model.pt` always has its matching config.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    _atomic_write(directory / CONFIG_FILE, lambda f: f.write(_config_bytes(config)))
    _atomic_write(directory / MODEL_FILE, lambda f: torch.save(state, f))
    return directory


def load_backbone(
    path: str | Path,
    image_size: int | None = None,
    num_heads: int | None = None,
    config: BackboneConfig | None = None,
) -> tuple[VisionTransformer, BackboneConfig, str]:
    """(timm ViT in eval mode, its config, sha256 of the weights file) from a checkpoint of a ViT family.

    `image_size` rebuilds the model at another resolution with interpolated positional embeddings.
    `config` (or chex's `config.json` beside the weights) overrides inference from shapes; `num_heads`
    overrides the dim/64 guess for foreign checkpoints. Any family: `registry.open_backbone`.
    """
    from pipeline.backbone.families._vit import vit_backbone
    from pipeline.backbone.registry import open_backbone

    if config is not None:
        found = inspect_path(path)
        sd = convert(found.state_dict())
        backbone = vit_backbone("chex", sd, config, file_sha256(found.weights), str(found.weights), image_size)
    else:
        backbone = open_backbone(path, image_size=image_size, num_heads=num_heads)
    if backbone.vit_config is None:
        raise CheckpointError(f"{path}: a {backbone.family} backbone is not a timm ViT; use registry.open_backbone")
    log.info("loaded %s (%s): %s", path, backbone.family, backbone.vit_config)
    return backbone.model, backbone.vit_config, backbone.sha256


def load_state_dict_strict(model: nn.Module, sd: Mapping[str, torch.Tensor], source: str) -> None:
    """Load every tensor or fail listing unknown, missing and mis-shaped keys (never a partial load)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unknown = sorted(set(sd) - set(own))
    mis_shaped = sorted(
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(sd)
        if own[k].shape != sd[k].shape
    )
    if missing or unknown or mis_shaped:
        parts = [
            f"{name} ({len(keys)}): {_clip(keys)}"
            for name, keys in (("missing keys", missing), ("unknown keys", unknown), ("shape mismatches", mis_shaped))
            if keys
        ]
        raise CheckpointError(f"{source} does not match the backbone it should build; " + "; ".join(parts))
    model.load_state_dict(sd, strict=True)


def file_sha256(path: str | Path, block: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def resample_pos_embed(sd: StateDict, config: BackboneConfig) -> StateDict:
    pos = sd.get("pos_embed")
    if pos is None or pos.shape[1] == config.n_patches:
        return sd
    old = math.isqrt(pos.shape[1])
    log.info("interpolating positional embeddings %dx%d -> %dx%d", old, old, config.grid_size, config.grid_size)
    # bicubic without antialias, as DINOv2's interpolate_pos_encoding.
    new = resample_abs_pos_embed(
        pos, new_size=(config.grid_size,) * 2, old_size=(old, old), num_prefix_tokens=0, antialias=False
    )
    return {**sd, "pos_embed": new}


def _atomic_write(target: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _config_bytes(config: BackboneConfig) -> bytes:
    import json

    return (json.dumps(config.to_dict(), indent=2) + "\n").encode()


def _clip(items: list[str], n: int = 12) -> str:
    return ", ".join(items[:n]) + (f", ... (+{len(items) - n} more)" if len(items) > n else "")
