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
