"""timm VisionTransformer state dicts (`timm.create_model('vit_*').state_dict()`, MAE/timm fine-tunes).

Tell-tale keys: `patch_embed.proj.weight` and `blocks.0.attn.qkv.weight`. A classifier head (`head.*`) is not
part of the embedding backbone and is left out (logged); `fc_norm` becomes the final norm for models that
pooled with it.
"""

from __future__ import annotations

import logging
import re

from pipeline.backbone.found import Found
from pipeline.backbone.registry import Family, register

log = logging.getLogger(__name__)
# Classifier heads of timm/MAE fine-tune checkpoints: not part of the embedding backbone.
HEAD_KEYS = re.compile(r"^(head|head_dist|fc_norm_head)\.")


def is_timm_vit(keys) -> bool:
    from pipeline.backbone.families.dinov2 import has_eva_signs

    keys = {k.removeprefix("module.") for k in keys}
    return "patch_embed.proj.weight" in keys and "blocks.0.attn.qkv.weight" in keys and not has_eva_signs(keys)


def timm_filter(sd: dict) -> dict:
    """timm ViT state dict (or chex's own) -> chex layout.

    Drops a classifier head, takes `fc_norm` as the final norm when the model pooled with it (timm/MAE
    global-average fine-tunes have no `norm`), and folds prefix-token positional embeddings into the tokens.
    """
    from pipeline.backbone.converters import fold_prefix_pos_embed

    if any(k.startswith("module.") for k in sd):
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    dropped = sorted(k for k in sd if HEAD_KEYS.match(k))
    if dropped:
        log.info("dropping classifier head keys %s", dropped)
    sd = {k: v for k, v in sd.items() if not HEAD_KEYS.match(k)}
    if "norm.weight" not in sd and "fc_norm.weight" in sd:
        sd["norm.weight"], sd["norm.bias"] = sd.pop("fc_norm.weight"), sd.pop("fc_norm.bias")
    return fold_prefix_pos_embed(sd)


class TimmViTFamily(Family):
    def recognise(self, found: Found) -> bool:
        return is_timm_vit(found.keys())

    def load(self, found: Found, image_size: int | None = None, num_heads: int | None = None):
        from pipeline.backbone.checkpoint import file_sha256
        from pipeline.backbone.converters import infer_config
        from pipeline.backbone.families._vit import vit_backbone

        sd = timm_filter(dict(found.state_dict()))
        config = infer_config(sd, num_heads=num_heads)
        return vit_backbone(self.name, sd, config, file_sha256(found.weights), str(found.weights), image_size)


register(
    TimmViTFamily(
        name="timm-vit",
        summary="timm VisionTransformer state dicts (class token, optional registers)",
        expects="a .pth/.bin/.safetensors state dict with patch_embed.proj.*, blocks.N.attn.qkv.*",
        preprocessing="short side -> size, centre crop, bilinear+antialias, [0,1], ImageNet mean/std",
        follows="huggingface/pytorch-image-models timm/models/vision_transformer.py",
        priority=60,
    )
)
