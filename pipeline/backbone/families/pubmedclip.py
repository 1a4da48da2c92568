"""PubMedCLIP (flaviagiammarino/pubmed-clip-vit-base-patch32) and any transformers `CLIPModel` /
`CLIPVisionModel` folder: config.json (model_type clip / clip_vision_model) + pytorch_model.bin or
model.safetensors [+ preprocessor_config.json (CLIPImageProcessor)].

The image tower (`vision_model.*`: `embeddings.class_embedding`, `embeddings.patch_embedding` (no bias),
`embeddings.position_embedding` (CLS slot first), `pre_layrnorm`, `encoder.layers.N.{layer_norm1,
self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1, mlp.fc2}`, `post_layernorm`) is built as timm's CLIP ViT
(`_vit.clip_vit_backbone`); q/k/v are concatenated into timm's `qkv`. Set aside (logged): `visual_projection`,
the text tower, `logit_scale`. Tokens: each of the last L encoder layers' hidden states through
`post_layernorm` (transformers applies it to the class token for `pooler_output`). Activation and LayerNorm eps
from config.json (`hidden_act` quick_gelu for OpenAI-initialised models). Preprocessing: the folder's
CLIPImageProcessor (shortest_edge resize, centre crop, bicubic, 1/255, OpenAI CLIP mean/std).
Follows huggingface/transformers models/clip/modeling_clip.py (CLIPVisionEmbeddings, CLIPVisionTransformer).
"""

from __future__ import annotations

import logging
import re

from pipeline.backbone.families._hf import fuse_qkv, preprocessing_from, renamed
from pipeline.backbone.found import Found
from pipeline.backbone.registry import Family, register
from pipeline.errors import CheckpointError

log = logging.getLogger(__name__)

MODEL_TYPES = ("clip", "clip_vision_model")
TOKENS = (
    "clip-vit: global = class token, patch = patch tokens (row-major), no registers, each of the last L layers "
    "through post_layernorm"
)
_P = r"^vision_model\."
_RENAMES = (
    (_P + r"embeddings\.patch_embedding\.", "patch_embed.proj."),
    (_P + r"pre_layrnorm\.", "norm_pre."),
    (_P + r"post_layernorm\.", "norm."),
    (_P + r"encoder\.layers\.(\d+)\.layer_norm([12])\.", r"blocks.\1.norm\2."),
    (_P + r"encoder\.layers\.(\d+)\.self_attn\.out_proj\.", r"blocks.\1.attn.proj."),
    (_P + r"encoder\.layers\.(\d+)\.mlp\.fc([12])\.", r"blocks.\1.mlp.fc\2."),
)
_QKV = re.compile(_P + r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$")
_ACTS = {"quick_gelu": "quick_gelu", "gelu": "gelu"}


def hf_clip_visual(sd: dict) -> tuple[dict, list[str]]:
    """(the image tower in chex's timm layout, the keys set aside)."""

    from pipeline.backbone.converters import fold_prefix_pos_embed

    out, aside, qkv = {}, [], {}
    for k, v in sd.items():
        if not k.startswith("vision_model.") or k.endswith("position_ids"):
            aside.append(k)
            continue
        v = v.float()
        if k == "vision_model.embeddings.class_embedding":
            out["cls_token"] = v.reshape(1, 1, -1)
        elif k == "vision_model.embeddings.position_embedding.weight":
            out["pos_embed"] = v.unsqueeze(0)
        elif m := _QKV.match(k):
            qkv.setdefault((int(m.group(1)), m.group(3)), {})["qkv".index(m.group(2))] = (k, v)
        else:
            out[renamed(k, _RENAMES)] = v
    return fold_prefix_pos_embed(fuse_qkv(out, qkv)), aside


class HFCLIPFamily(Family):
    def recognise(self, found: Found) -> bool:
        return found.folder is not None and (found.config() or {}).get("model_type") in MODEL_TYPES

    def load(self, found: Found, image_size: int | None = None, num_heads: int | None = None):
        from pipeline.backbone.checkpoint import file_sha256
        from pipeline.backbone.families._vit import clip_vit_backbone

        cfg = found.config()
        vision = cfg.get("vision_config", {}) if cfg.get("model_type") == "clip" else cfg
        act = _ACTS.get(vision.get("hidden_act", "quick_gelu"))
        if act is None:
            raise CheckpointError(f"{found.folder}/config.json: hidden_act {vision.get('hidden_act')!r} not supported")
        sd, aside = hf_clip_visual(dict(found.state_dict()))
        if aside:
            log.info("set aside (not the image backbone): visual_projection, text tower, %d keys", len(aside))
        processor = found.config("preprocessor_config.json")
        native = int(vision.get("image_size", 224))
        return clip_vit_backbone(
            self.name, sd, heads=num_heads or int(vision.get("num_attention_heads", 12)), act=act,
            eps=float(vision.get("layer_norm_eps", 1e-5)), image_size=image_size,
            preprocessing=lambda size: preprocessing_from(processor, size, native, str(found.folder)),
            sha256=file_sha256(found.weights), source=str(found.weights), token_convention=TOKENS,
            norm="post_layernorm applied to each layer's tokens",
        )  # fmt: skip


register(
    HFCLIPFamily(
        name="pubmedclip",
        summary="PubMedCLIP and other transformers CLIPModel / CLIPVisionModel folders (image tower)",
        expects="folder: config.json (model_type clip) + pytorch_model.bin or model.safetensors "
        "[+ preprocessor_config.json]",
        preprocessing="from preprocessor_config.json (CLIPImageProcessor): shortest_edge resize, centre crop, "
        "bicubic+antialias, /255, its mean/std",
        follows="huggingface/transformers models/clip/modeling_clip.py; PubMedCLIP model card",
        priority=10,
        by_config=True,
    )
)
