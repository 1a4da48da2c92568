"""DINOv2 / CheXFound training or eval checkpoints (`{'teacher': {'backbone.*'}}`, `{'model': {'teacher.backbone.*'}}`,
or a bare DINOv2 backbone state dict): facebookresearch/dinov2 `DinoVisionTransformer` keys.

Tell-tale keys: a `*.backbone.` prefix, chunked `blocks.<chunk>.<i>.`, SwiGLU `mlp.w12`, `register_tokens`, or a
`mask_token` without an MAE decoder. Built as chex's timm ViT (`no_embed_class`: the CLS position is folded into
`cls_token`), tokens as DINOv2's `get_intermediate_layers(n, norm=True)`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from pipeline.backbone.found import Found
from pipeline.backbone.registry import Family, register

log = logging.getLogger(__name__)

# Prefixes of the backbone inside a DINOv2/CheXFound training state dict, preferred first.
PREFIXES = ("teacher.backbone.", "backbone.", "student.backbone.", "module.backbone.")


def has_eva_signs(keys) -> bool:
    """EVA / EVA-X keys (2-D RoPE tables, separate q/v biases): neither DINOv2 nor a plain timm ViT."""
    return any(".attn.q_bias" in k or k.startswith("rope.") or ".rope." in k for k in keys)


def is_dinov2(keys: Mapping | list) -> bool:
    keys = list(keys)
    if has_eva_signs(keys):
        return False
    has_decoder = any(k.startswith(("decoder_", "decoder.")) for k in keys)
    return (
        any(k.startswith(PREFIXES) for k in keys)
        or any(re.match(r"^blocks\.\d+\.\d+\.", k) or ".mlp.w12." in k for k in keys)
        or "register_tokens" in keys
        or ("mask_token" in keys and not has_decoder)
    )


def dinov2_filter(sd: dict) -> dict:
    """DINOv2 / CheXFound training or teacher checkpoint -> chex layout.

    Takes the teacher backbone (`teacher.backbone.*`), un-chunks `blocks.<chunk>.<i>.` (DINOv2 numbers
    blocks globally inside each chunk), renames SwiGLU `w12`/`w3` to timm's packed `fc1`/`fc2` and
    `register_tokens` to `reg_token`, and folds the CLS positional embedding into `cls_token`.
    """
    from pipeline.backbone.converters import fold_prefix_pos_embed

    for prefix in PREFIXES:
        if any(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
            log.info("taking the backbone under %r", prefix)
            break
    sd.pop("mask_token", None)
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k)
        k = re.sub(r"\.mlp\.w12\.", ".mlp.fc1.", k)
        k = re.sub(r"\.mlp\.w3\.", ".mlp.fc2.", k)
        if k == "register_tokens":
            k = "reg_token"
        out[k] = v
    return fold_prefix_pos_embed(out)


class DinoV2Family(Family):
    def recognise(self, found: Found) -> bool:
        return is_dinov2(found.keys())

    def load(self, found: Found, image_size: int | None = None, num_heads: int | None = None):
        from pipeline.backbone.checkpoint import file_sha256
        from pipeline.backbone.converters import infer_config
        from pipeline.backbone.families._vit import vit_backbone

        sd = dinov2_filter(dict(found.state_dict()))
        config = infer_config(sd, num_heads=num_heads)
        return vit_backbone(self.name, sd, config, file_sha256(found.weights), str(found.weights), image_size)


register(
    DinoV2Family(
        name="dinov2",
        summary="CheXFound and other DINOv2 checkpoints (teacher_checkpoint.pth, training model_*.pth)",
        expects="a .pth/.pt state dict with DINOv2 keys (teacher.backbone.*, blocks.N.*, mlp.w12, register_tokens)",
        preprocessing="short side -> size, centre crop, bilinear+antialias, [0,1], ImageNet mean/std",
        follows="facebookresearch/dinov2 dinov2/models/vision_transformer.py; CheXFound's eval transform",
        priority=30,
    )
)
