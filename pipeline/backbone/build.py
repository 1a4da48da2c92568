"""Build a timm VisionTransformer from a BackboneConfig (random init; weights come from `checkpoint`)."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from timm.layers import Mlp, SwiGLUPacked
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from pipeline.backbone.config import BackboneConfig


def build_backbone(config: BackboneConfig, **timm_overrides: Any) -> VisionTransformer:
    """A headless timm ViT (num_classes=0) in the DINOv2 token layout: [CLS, registers..., patches...].

    Class and register tokens carry no positional embedding (`no_embed_class`), so DINOv2/CheXFound
    weights load exactly (their CLS position is folded into `cls_token` by the converter).
    `timm_overrides` go to the constructor as is (e.g. drop_path_rate for pretraining).
    """
    kwargs: dict[str, Any] = dict(
        img_size=config.img_size,
        patch_size=config.patch_size,
        embed_dim=config.embed_dim,
        depth=config.depth,
        num_heads=config.num_heads,
        qkv_bias=config.qkv_bias,
        init_values=config.layer_scale,
        reg_tokens=config.num_registers,
        no_embed_class=True,
        class_token=True,
        num_classes=0,
        global_pool="token",
        mlp_layer=_ffn_factory(config),
        act_layer=nn.SiLU if config.ffn == "swiglufused" else nn.GELU,
    )
    kwargs.update(timm_overrides)
    return VisionTransformer(**kwargs)


def _ffn_factory(config: BackboneConfig):
    """An mlp_layer whose hidden width is exactly the config's (timm would derive it from a float ratio)."""
    hidden = config.ffn_hidden
    if config.ffn == "swiglufused":
        return partial(_fixed_hidden, SwiGLUPacked, 2 * hidden)
    return partial(_fixed_hidden, Mlp, hidden)


def _fixed_hidden(layer: type[nn.Module], hidden: int, *args: Any, hidden_features: int | None = None, **kwargs: Any):
    return layer(*args, hidden_features=hidden, **kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype
