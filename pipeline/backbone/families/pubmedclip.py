"""PubMedCLIP (flaviagiammarino/pubmed-clip-vit-base-patch32) and any transformers `CLIPModel` /
`CLIPVisionModel` folder: config.json (model_type clip / clip_vision_model) + pytorch_model.bin or
model.safetensors [+ preprocessor_config.json (CLIPImageProcessor)].

The image tower (`vision_model.*`: `embeddings.class_embedding`, `embeddings.patch_embedding` (no bias),
`embeddings.position_embedding` (CLS slot first), `pre_layrnorm`, `encoder.layers.N.{layer_norm1,
self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1, mlp.fc2}`, `post_layernorm`) is built as timm's CLIP ViT
(`_vit.clip_vit_backbone`); q/k/v are concatenated into timm's `qkv`. Set aside (logged): `visual_projection`,
the text tower, `logit_scale` (`image_text` builds them for zero-shot, Table III). Tokens: each of the last L
encoder layers' hidden states through
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
_T = r"^text_model\."
_TEXT_RENAMES = (  # transformers CLIPTextTransformer -> pipeline/zeroshot/text.py CLIPText
    (_T + r"embeddings\.token_embedding\.", "token_embedding."),
    (_T + r"embeddings\.position_embedding\.weight$", "positional_embedding"),
    (_T + r"encoder\.layers\.(\d+)\.layer_norm([12])\.", r"blocks.\1.ln_\2."),
    (_T + r"encoder\.layers\.(\d+)\.self_attn\.out_proj\.", r"blocks.\1.attn.out_proj."),
    (_T + r"encoder\.layers\.(\d+)\.mlp\.fc([12])\.", r"blocks.\1.mlp.fc\2."),
    (_T + r"final_layer_norm\.", "ln_final."),
)
_TEXT_QKV = re.compile(_T + r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$")
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

    def image_text(self, found: Found, tokenizer=None):
        """transformers' CLIPTextModel (`text_model.*`, q/k/v fused; heads, activation and eps from
        config.json's text_config), `text_projection`, `visual_projection`, `logit_scale`, and the folder's
        tokenizer (tokenizer.json, else vocab.json + merges.txt)."""
        import torch

        from pipeline.backbone.checkpoint import file_sha256
        from pipeline.zeroshot.alignment import ImageText, no_text_tower
        from pipeline.zeroshot.text import clip_text_from
        from pipeline.zeroshot.tokenize import find_tokenizer_files, hf_clip_folder

        cfg = found.config()
        if cfg.get("model_type") != "clip":
            raise CheckpointError(f"{found.folder}: a CLIPVisionModel folder; " + no_text_tower(self.name))
        files = find_tokenizer_files(
            tokenizer or found.folder, (("tokenizer.json",), ("vocab.json", "merges.txt")), self.name,
            "A transformers CLIP folder keeps its tokenizer beside config.json (save_pretrained of CLIPTokenizer); "
            "copy those files there or pass --tokenizer FOLDER.",
        )  # fmt: skip
        text_cfg = cfg.get("text_config") or {}
        act = _ACTS.get(text_cfg.get("hidden_act", "quick_gelu"))
        if act is None:
            raise CheckpointError(f"{found.folder}/config.json: hidden_act {text_cfg['hidden_act']!r} not supported")
        sd = found.state_dict()
        text, qkv = {}, {}
        for k, v in sd.items():
            if not k.startswith("text_model.") or k.endswith("position_ids"):
                continue
            if m := _TEXT_QKV.match(k):
                qkv.setdefault((int(m.group(1)), m.group(3)), {})["qkv".index(m.group(2))] = (k, v)
            else:
                text[renamed(k, _TEXT_RENAMES)] = v
        fused = fuse_qkv(text, qkv)
        text = {re.sub(r"\.attn\.qkv\.(weight|bias)$", r".attn.in_proj_\1", k): v for k, v in fused.items()}
        if "text_projection.weight" in sd:
            text["text_projection"] = sd["text_projection.weight"].float().T
        tower = clip_text_from(
            text, heads=int(text_cfg.get("num_attention_heads", 8)), act=act,
            eps=float(text_cfg.get("layer_norm_eps", 1e-5)), source=str(found.weights),
        )  # fmt: skip
        if "visual_projection.weight" not in sd or "logit_scale" not in sd:
            raise CheckpointError(f"{found.weights}: no visual_projection or logit_scale; not a whole CLIPModel")
        return ImageText(
            family=self.name, sha256=file_sha256(found.weights),
            image_projection=sd["visual_projection.weight"].float(), image_bias=None, text=tower,
            tokenizer=hf_clip_folder(files, tower.positional_embedding.shape[0]),
            logit_scale=float(torch.exp(sd["logit_scale"].float())), source=str(found.weights),
        )  # fmt: skip


register(
    HFCLIPFamily(
        name="pubmedclip",
        summary="PubMedCLIP and other transformers CLIPModel / CLIPVisionModel folders (image tower)",
        expects="folder: config.json (model_type clip) + pytorch_model.bin or model.safetensors "
        "[+ preprocessor_config.json] [+ tokenizer.json or vocab.json + merges.txt, for zero-shot]",
        preprocessing="from preprocessor_config.json (CLIPImageProcessor): shortest_edge resize, centre crop, "
        "bicubic+antialias, /255, its mean/std",
        follows="huggingface/transformers models/clip/modeling_clip.py; PubMedCLIP model card",
        priority=10,
        by_config=True,
    )
)
