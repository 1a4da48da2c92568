"""Shared by the families built as chex's timm ViT (`build_backbone`): strict load -> `Backbone`."""

from __future__ import annotations

from pipeline.backbone.config import BackboneConfig
from pipeline.backbone.converters import StateDict
from pipeline.backbone.interface import VIT_TOKENS, Backbone


def vit_backbone(
    family: str,
    sd: StateDict,
    config: BackboneConfig,
    sha256: str,
    source: str,
    image_size: int | None = None,
    preprocessing=None,
) -> Backbone:
    """Build `config` (at `image_size` when given, positions resampled), load `sd` strictly, wrap it.

    `preprocessing(img_size)` gives the family's declared preprocessing at the final input size; by default
    chex's eval view at the config's mean/std.
    """
    from pipeline.backbone.build import build_backbone
    from pipeline.backbone.checkpoint import load_state_dict_strict, resample_pos_embed
    from pipeline.backbone.tokens import last_layer_tokens
    from pipeline.embed.preprocess import Preprocessing

    if image_size is not None and image_size != config.img_size:
        config = config.replace(img_size=image_size)
    sd = resample_pos_embed(sd, config)
    model = build_backbone(config)
    load_state_dict_strict(model, sd, source=source)
    model.eval()
    prep = preprocessing(config.img_size) if preprocessing else Preprocessing(config.img_size, config.mean, config.std)
    return Backbone(
        family=family,
        model=model,
        config=config.to_dict(),
        sha256=sha256,
        preprocessing=prep,
        dim=config.embed_dim,
        depth=config.depth,
        n_registers=config.num_registers,
        grid=(config.grid_size, config.grid_size),
        token_fn=last_layer_tokens,
        token_convention=VIT_TOKENS,
        vit_config=config,
    )


def clip_vit_backbone(
    family: str,
    sd: StateDict,
    *,
    heads: int,
    act: str,
    eps: float,
    image_size: int | None,
    preprocessing,
    sha256: str,
    source: str,
    token_convention: str,
    norm: str,
) -> Backbone:
    """A CLIP image tower in chex's timm layout (`cls_token`, `pos_embed` without the CLS slot, `norm_pre`,
    `blocks.N.*`, `norm`) built as timm builds its CLIP ViTs: pre-norm, patch embedding without bias."""
    import math
    import re
    from functools import partial

    from timm.models.vision_transformer import VisionTransformer
    from torch import nn

    from pipeline.backbone.checkpoint import load_state_dict_strict, resample_pos_embed
    from pipeline.backbone.tokens import last_layer_tokens

    width, patch = sd["cls_token"].shape[-1], sd["patch_embed.proj.weight"].shape[-1]
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"^blocks\.(\d+)\.", k)))
    size = image_size or math.isqrt(sd["pos_embed"].shape[1]) * patch
    sd = resample_pos_embed(sd, BackboneConfig(embed_dim=width, num_heads=1, patch_size=patch, img_size=size))
    model = VisionTransformer(
        img_size=size, patch_size=patch, embed_dim=width, depth=depth, num_heads=heads,
        mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / width, qkv_bias=True, pre_norm=True,
        no_embed_class=True, class_token=True, global_pool="token", num_classes=0, act_layer=act,
        norm_layer=partial(nn.LayerNorm, eps=eps),
    )  # fmt: skip
    load_state_dict_strict(model, sd, source=source)
    model.eval()
    config = dict(
        arch="clip-vit", embed_dim=width, depth=depth, num_heads=heads, patch_size=patch, img_size=size, act=act,
        eps=eps,
    )  # fmt: skip
    grid = size // patch
    return Backbone(
        family=family, model=model, config=config, sha256=sha256, preprocessing=preprocessing(size), dim=width,
        depth=depth, n_registers=0, grid=(grid, grid), token_fn=last_layer_tokens, token_convention=token_convention,
        norm=norm,
    )  # fmt: skip
