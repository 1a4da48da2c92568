"""chex checkpoints (tensors-only `model.pt` + `config.json`) and loading foreign ones safely.

`load_backbone` accepts a chex checkpoint folder, or a single weights file in the DINOv2/CheXFound, timm
or MAE layout (architecture inferred from tensor shapes). Files are read with `torch.load(weights_only=True)`:
a checkpoint that needs pickled code is refused. Unknown or missing keys are an error listing them.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from pipeline.backbone.build import build_backbone
from pipeline.backbone.config import BackboneConfig
from pipeline.backbone.converters import StateDict, convert, detect_layout, infer_config, unwrap
from pipeline.errors import CheckpointError

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


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
    """(model in eval mode, its config, sha256 of the weights file) from a chex or foreign checkpoint.

    `image_size` rebuilds the model at another resolution with interpolated positional embeddings.
    `config` (or a `config.json` beside the weights) overrides inference from shapes; `num_heads`
    overrides the dim/64 guess for foreign checkpoints.
    """
    weights, sidecar = _resolve(Path(path))
    raw = read_weights(weights)
    layout = detect_layout(raw)
    sd = convert(raw, layout)
    if config is None and sidecar is not None:
        config = BackboneConfig.load(sidecar)
    if config is None:
        config = infer_config(sd, num_heads=num_heads)
    log.info("loaded %s (%s layout): %s", weights, layout, config)
    if image_size is not None and image_size != config.img_size:
        config = config.replace(img_size=image_size)
    sd = _resample_pos_embed(sd, config)
    model = build_backbone(config)
    load_state_dict_strict(model, sd, source=str(weights))
    model.eval()
    return model, config, file_sha256(weights)


def read_weights(path: Path) -> StateDict:
    """The flat tensor dict in a weights file, loaded without running pickled code."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        # argparse.Namespace is a plain attribute bag that MAE's training script saves beside the weights.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} needs pickled code to load, which chex refuses (torch.load weights_only=True): "
            f"{_first_line(exc)}. "
            "Re-save it as a tensors-only state dict (torch.save(model.state_dict(), path)) from a trusted environment."
        ) from None
    except (OSError, RuntimeError, EOFError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {_first_line(exc)}") from None
    return unwrap(obj, source=str(path))


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


def _resolve(path: Path) -> tuple[Path, Path | None]:
    """(weights file, config.json beside it or None)."""
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        if (path / MODEL_FILE).is_file():
            weights = path / MODEL_FILE
        else:
            found = sorted(p for p in path.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file())
            if len(found) != 1:
                raise CheckpointError(
                    f"checkpoint folder {path} holds {len(found)} weight files {[p.name for p in found]}; "
                    f"expected {MODEL_FILE} (+ {CONFIG_FILE}) or exactly one of {_WEIGHT_SUFFIXES}: pass the file"
                )
            weights = found[0]
    else:
        weights = path
    sidecar = weights.parent / CONFIG_FILE
    return weights, sidecar if sidecar.is_file() else None


def _resample_pos_embed(sd: StateDict, config: BackboneConfig) -> StateDict:
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


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _clip(items: list[str], n: int = 12) -> str:
    return ", ".join(items[:n]) + (f", ... (+{len(items) - n} more)" if len(items) > n else "")
