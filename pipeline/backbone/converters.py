"""What the ViT families share: unwrapping a checkpoint's container, chex's timm-ViT layout and `infer_config`.

chex's layout is `build_backbone`'s state dict: a headless timm ViT whose class and register tokens carry
no positional embedding (DINOv2 layout), SwiGLU as timm's packed `mlp.fc1` / `mlp.fc2`. Each ViT family's
filter (pipeline/backbone/families/) maps its keys to that layout; `infer_config` then reads the architecture
off the tensor shapes. Leftover or missing keys are reported by `checkpoint.load_state_dict_strict`, never ignored.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping

import torch

from pipeline.backbone.config import BackboneConfig
from pipeline.errors import CheckpointError

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]

# Containers that training scripts wrap the weights in, tried in order.
_CONTAINER_KEYS = ("teacher", "model", "state_dict", "model_state_dict", "module")


def unwrap(obj: object, source: str = "checkpoint") -> StateDict:
    """The flat tensor dict inside a loaded checkpoint (`{'model': ...}`, `{'teacher': ...}`, ...)."""
    while isinstance(obj, Mapping) and not _is_flat(obj):
        for key in _CONTAINER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
        else:
            raise CheckpointError(
                f"{source}: no state dict found; top-level keys are {sorted(map(str, obj))[:20]} "
                f"(expected tensors, or one of {list(_CONTAINER_KEYS)} holding them)"
            )
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected a dict of tensors, got {type(obj).__name__}")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def detect_layout(sd: Mapping[str, torch.Tensor]) -> str:
    """'dinov2' (DINOv2/CheXFound), 'mae' (MAE pretraining), or 'timm' (timm and chex layouts).

    The tests are the families' own (pipeline/backbone/families/dinov2.py, mae.py)."""
    from pipeline.backbone.families.dinov2 import is_dinov2
    from pipeline.backbone.families.mae import is_mae

    keys = list(sd)
    if is_dinov2(keys):
        return "dinov2"
    return "mae" if is_mae(keys) else "timm"


def convert(sd: Mapping[str, torch.Tensor], layout: str | None = None) -> StateDict:
    """Map a flat state dict of the ViT `layout` (detected when None) to chex's layout."""
    from pipeline.backbone.families.dinov2 import dinov2_filter
    from pipeline.backbone.families.mae import mae_filter
    from pipeline.backbone.families.timm_vit import timm_filter

    layout = layout or detect_layout(sd)
    filters = {"dinov2": dinov2_filter, "mae": mae_filter, "timm": timm_filter}
    if layout not in filters:
        raise CheckpointError(f"unknown checkpoint layout {layout!r}; known: {sorted(filters)}")
    return filters[layout](dict(sd))


def infer_config(sd: Mapping[str, torch.Tensor], num_heads: int | None = None, **fields: object) -> BackboneConfig:
    """Read the architecture off a chex-layout state dict's shapes; heads = dim/64 unless given."""
    needed = ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc2.weight")
    missing = [k for k in needed if k not in sd]
    if missing:
        raise CheckpointError(f"cannot infer the architecture: keys {missing} are missing from the state dict")
    dim = sd["cls_token"].shape[-1]
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"^blocks\.(\d+)\.", k)))
    patch = sd["patch_embed.proj.weight"].shape[-1]
    grid = _square_side(sd["pos_embed"].shape[1], "pos_embed")
    fc1_out, fc2_in = sd["blocks.0.mlp.fc1.weight"].shape[0], sd["blocks.0.mlp.fc2.weight"].shape[1]
    ffn = "swiglufused" if fc1_out == 2 * fc2_in else "mlp"
    inferred: dict[str, object] = dict(
        embed_dim=dim,
        depth=depth,
        num_heads=num_heads or max(1, dim // 64),
        patch_size=patch,
        img_size=grid * patch,
        num_registers=sd["reg_token"].shape[1] if "reg_token" in sd else 0,
        layer_scale=1e-5 if "blocks.0.ls1.gamma" in sd else None,
        ffn=ffn,
        qkv_bias="blocks.0.attn.qkv.bias" in sd,
    )
    default_hidden = BackboneConfig(**{**inferred, "mlp_hidden": None}).ffn_hidden  # type: ignore[arg-type]
    inferred["mlp_hidden"] = None if fc2_in == default_hidden else fc2_in
    inferred.update({k: v for k, v in fields.items() if v is not None})
    return BackboneConfig(**inferred)  # type: ignore[arg-type]


def fold_prefix_pos_embed(sd: StateDict) -> StateDict:
    """Move positional embeddings of CLS/register tokens into the tokens (exact: both are added once)."""
    if "pos_embed" not in sd or "cls_token" not in sd:
        return sd
    pos = sd["pos_embed"]
    n = pos.shape[1]
    n_reg = sd["reg_token"].shape[1] if "reg_token" in sd else 0
    if _is_square(n):
        return sd
    if _is_square(n - 1):
        n_prefix = 1
    elif n_reg and _is_square(n - 1 - n_reg):
        n_prefix = 1 + n_reg
    else:
        raise CheckpointError(f"pos_embed has {n} positions: not a square grid plus 1 or {1 + n_reg} prefix tokens")
    sd = dict(sd)
    sd["cls_token"] = sd["cls_token"] + pos[:, :1]
    if n_prefix > 1:
        sd["reg_token"] = sd["reg_token"] + pos[:, 1:n_prefix]
    sd["pos_embed"] = pos[:, n_prefix:]
    return sd


def _is_flat(obj: Mapping) -> bool:
    return any(isinstance(v, torch.Tensor) for v in obj.values())


def _is_square(n: int) -> bool:
    return n > 0 and math.isqrt(n) ** 2 == n


def _square_side(n: int, what: str) -> int:
    if not _is_square(n):
        raise CheckpointError(f"{what} has {n} positions, not a square grid")
    return math.isqrt(n)
