"""RAD-DINO (microsoft/rad-dino) and any transformers `Dinov2Model` / `Dinov2WithRegistersModel` release folder:
config.json (model_type dinov2) + model.safetensors (or pytorch_model.bin) + preprocessor_config.json.

Built as chex's timm ViT (the same network: pre-norm blocks, layer scale, GELU or SwiGLU ffn, class token,
optional registers; transformers keeps separate q/k/v, `layer_scale*.lambda1` and a position table whose first
slot is the CLS's, folded into `cls_token` here). Tokens: the last L blocks' hidden states through `layernorm`,
as `Dinov2Model(output_hidden_states=True)` gives them. Preprocessing: the folder's `BitImageProcessor` config
(shortest_edge resize, centre crop, PIL bicubic = "bicubic+antialias", rescale 1/255, its mean/std).
Follows huggingface/transformers src/transformers/models/dinov2/modeling_dinov2.py (Dinov2Embeddings,
Dinov2Layer, `interpolate_pos_encoding`: bicubic, no antialias, as `resample_pos_embed`).
"""

from __future__ import annotations

import logging
import re

from pipeline.backbone.families._hf import fuse_qkv, preprocessing_from, renamed
from pipeline.backbone.found import Found
from pipeline.backbone.registry import Family, register
from pipeline.errors import CheckpointError

log = logging.getLogger(__name__)

MODEL_TYPES = ("dinov2", "dinov2_with_registers")
_RENAMES = (
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.register_tokens$", "reg_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^encoder\.layer\.(\d+)\.norm([12])\.", r"blocks.\1.norm\2."),
    (r"^encoder\.layer\.(\d+)\.attention\.(?:output\.dense|o_proj)\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1$", r"blocks.\1.ls\2.gamma"),
    (r"^encoder\.layer\.(\d+)\.mlp\.(?:fc1|weights_in)\.", r"blocks.\1.mlp.fc1."),
    (r"^encoder\.layer\.(\d+)\.mlp\.(?:fc2|weights_out)\.", r"blocks.\1.mlp.fc2."),
    (r"^layernorm\.", "norm."),
)
_QKV = re.compile(
    r"^encoder\.layer\.(\d+)\.attention\.(?:attention\.)?(query|key|value|q_proj|k_proj|v_proj)\.(weight|bias)$"
)
_QKV_ORDER = {"query": 0, "key": 1, "value": 2, "q_proj": 0, "k_proj": 1, "v_proj": 2}


def hf_dinov2_filter(sd: dict) -> dict:
    """transformers Dinov2Model keys -> chex's timm-ViT layout (strictly: anything unmapped stays as is and is
    then listed as unknown by the strict load). `embeddings.mask_token` is for masked pretraining only."""

    from pipeline.backbone.converters import fold_prefix_pos_embed

    out, qkv = {}, {}
    for k, v in sd.items():
        if k == "embeddings.mask_token":
            continue
        if m := _QKV.match(k):
            qkv.setdefault((int(m.group(1)), m.group(3)), {})[_QKV_ORDER[m.group(2)]] = (k, v)
            continue
        out[renamed(k, _RENAMES)] = v
    return fold_prefix_pos_embed(fuse_qkv(out, qkv))


def _side(value) -> int:
    return int(value[0] if isinstance(value, list | tuple) else value)


class HFDinov2Family(Family):
    def recognise(self, found: Found) -> bool:
        cfg = found.config() or {}
        return found.folder is not None and cfg.get("model_type") in MODEL_TYPES

    def load(self, found: Found, image_size: int | None = None, num_heads: int | None = None):
        from pipeline.backbone.checkpoint import file_sha256
        from pipeline.backbone.config import BackboneConfig
        from pipeline.backbone.families._vit import vit_backbone

        cfg = found.config()
        where = str(found.folder)
        for key, want in (("hidden_act", "gelu"), ("layer_norm_eps", 1e-6), ("num_channels", 3)):
            if cfg.get(key, want) != want:
                raise CheckpointError(f"{where}/config.json: {key} {cfg[key]!r} is not supported (chex: {want!r})")
        dim = int(cfg.get("hidden_size", 768))
        sd = hf_dinov2_filter(dict(found.state_dict()))
        swiglu = bool(cfg.get("use_swiglu_ffn", False))
        hidden = sd["blocks.0.mlp.fc2.weight"].shape[1] if "blocks.0.mlp.fc2.weight" in sd else None
        img, patch = _side(cfg.get("image_size", 224)), _side(cfg.get("patch_size", 14))
        config = BackboneConfig(
            embed_dim=dim,
            depth=int(cfg.get("num_hidden_layers", 12)),
            num_heads=int(cfg.get("num_attention_heads", 12)),
            patch_size=patch,
            img_size=img // patch * patch,
            num_registers=int(cfg.get("num_register_tokens", 0)) if cfg.get("model_type") != "dinov2" else 0,
            layer_scale=float(cfg.get("layerscale_value", 1.0)),
            ffn="swiglufused" if swiglu else "mlp",
            mlp_hidden=hidden,
            qkv_bias=bool(cfg.get("qkv_bias", True)),
        )
        processor = found.config("preprocessor_config.json")
        prep = preprocessing_from(processor, image_size or config.img_size, config.img_size, where)
        config = config.replace(mean=prep.mean, std=prep.std)
        sha = file_sha256(found.weights)
        return vit_backbone(
            self.name, sd, config, sha, str(found.weights), image_size, preprocessing=lambda _size: prep
        )


register(
    HFDinov2Family(
        name="rad-dino",
        summary="RAD-DINO and other transformers Dinov2Model / Dinov2WithRegistersModel folders",
        expects="folder: config.json (model_type dinov2) + model.safetensors or pytorch_model.bin "
        "[+ preprocessor_config.json]",
        preprocessing="from preprocessor_config.json (BitImageProcessor): shortest_edge resize, centre crop, "
        "bicubic+antialias, /255, its mean/std (RAD-DINO: 518 px)",
        follows="huggingface/transformers models/dinov2/modeling_dinov2.py; microsoft/rad-dino model card",
        priority=10,
        by_config=True,
    )
)
