"""BiomedCLIP (microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224) and other open_clip hf-hub folders whose
image tower is a timm model: open_clip_config.json (`model_cfg.vision_cfg.timm_model_name`, `preprocess_cfg`) +
open_clip_pytorch_model.bin or open_clip_model.safetensors.

`visual.trunk.*` is the timm model's own state dict (built here with `timm.create_model(timm_model_name,
num_classes=0)` and loaded strictly; another input size through timm's `set_input_size`); `visual.head.*`
(the image-text projection) and the text tower are set aside (logged). Tokens: timm's `forward_intermediates`
of the last L blocks through the final norm (class token, registers if the timm model has them, patches).
Preprocessing: open_clip `image_transform` for evaluation with the folder's `preprocess_cfg` (resize the
short side, centre crop, bicubic, its mean/std). Follows mlfoundations/open_clip src/open_clip/timm_model.py
(TimmModel), factory.py / push_to_hf_hub.py (the hf-hub folder) and transform.py (image_transform).
"""

from __future__ import annotations

import logging

from pipeline.backbone.found import Found
from pipeline.backbone.registry import Family, register
from pipeline.errors import CheckpointError

log = logging.getLogger(__name__)

TOKENS = (
    "timm-vit: global = class token, patch = patch tokens (row-major), registers = register tokens, "
    "each of the last L blocks through the trunk's final norm"
)
_OPENAI_MEAN, _OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


class OpenCLIPTimmFamily(Family):
    def recognise(self, found: Found) -> bool:
        cfg = found.config("open_clip_config.json")
        return cfg is not None and bool(((cfg.get("model_cfg") or {}).get("vision_cfg") or {}).get("timm_model_name"))

    def load(self, found: Found, image_size: int | None = None, num_heads: int | None = None):
        import timm
        from timm.models.vision_transformer import VisionTransformer

        from pipeline.backbone.checkpoint import file_sha256, load_state_dict_strict
        from pipeline.backbone.interface import Backbone
        from pipeline.backbone.tokens import last_layer_tokens
        from pipeline.embed.preprocess import Preprocessing

        cfg = found.config("open_clip_config.json")
        vision = cfg["model_cfg"]["vision_cfg"]
        name = vision["timm_model_name"]
        sd = dict(found.state_dict())
        trunk = {k.removeprefix("visual.trunk."): v.float() for k, v in sd.items() if k.startswith("visual.trunk.")}
        aside = [k for k in sd if not k.startswith("visual.trunk.")]
        if aside:
            log.info("set aside (not the image backbone): visual.head and the text tower, %d keys", len(aside))
        model = timm.create_model(name, pretrained=False, num_classes=0)
        if not isinstance(model, VisionTransformer):
            raise CheckpointError(f"{found.folder}: open_clip timm tower {name!r} is not a timm VisionTransformer")
        load_state_dict_strict(model, trunk, source=str(found.weights))
        native = int(vision.get("image_size", model.patch_embed.img_size[0]))
        size = image_size or native
        if size != model.patch_embed.img_size[0]:
            model.set_input_size(img_size=size)
        model.eval()
        pre = cfg.get("preprocess_cfg") or {}
        if pre.get("resize_mode", "shortest") != "shortest":
            raise CheckpointError(f"{found.folder}: open_clip resize_mode {pre['resize_mode']!r} is not supported")
        interp = "bilinear+antialias" if pre.get("interpolation") == "bilinear" else "bicubic+antialias"
        prep = Preprocessing(
            size, tuple(pre.get("mean", _OPENAI_MEAN)), tuple(pre.get("std", _OPENAI_STD)), interpolation=interp
        )
        grid = tuple(model.patch_embed.grid_size)
        return Backbone(
            family=self.name, model=model, config={"arch": "open_clip-timm", "timm_model_name": name, "img_size": size},
            sha256=file_sha256(found.weights), preprocessing=prep, dim=model.embed_dim, depth=len(model.blocks),
            n_registers=model.num_reg_tokens, grid=(int(grid[0]), int(grid[1])), token_fn=last_layer_tokens,
            token_convention=TOKENS, norm="the timm trunk's final norm applied to each layer",
        )  # fmt: skip


register(
    OpenCLIPTimmFamily(
        name="biomedclip",
        summary="BiomedCLIP and other open_clip hf-hub folders with a timm ViT image tower (visual.trunk.*)",
        expects="folder: open_clip_config.json (vision_cfg.timm_model_name) + open_clip_pytorch_model.bin "
        "or open_clip_model.safetensors",
        preprocessing="open_clip eval transform from preprocess_cfg: short side resize, centre crop, "
        "bicubic+antialias, its mean/std",
        follows="mlfoundations/open_clip timm_model.py, push_to_hf_hub.py, transform.py",
        priority=10,
        by_config=True,
    )
)
