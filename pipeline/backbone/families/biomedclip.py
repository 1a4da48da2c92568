"""BiomedCLIP (microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224) and other open_clip hf-hub folders whose
image tower is a timm model: open_clip_config.json (`model_cfg.vision_cfg.timm_model_name`, `preprocess_cfg`) +
open_clip_pytorch_model.bin or open_clip_model.safetensors.

`visual.trunk.*` is the timm model's own state dict (built here with `timm.create_model(timm_model_name,
num_classes=0)` and loaded strictly; another input size through timm's `set_input_size`); `visual.head.*`
(the image-text projection) and the text tower are set aside (logged; `image_text` builds them for
zero-shot). Tokens: timm's `forward_intermediates`
of the last L blocks through the final norm (class token, registers if the timm model has them, patches).
Preprocessing: open_clip `image_transform` for evaluation with the folder's `preprocess_cfg` (resize the
short side, centre crop, bicubic, its mean/std). Follows mlfoundations/open_clip src/open_clip/timm_model.py
(TimmModel), factory.py / push_to_hf_hub.py (the hf-hub folder) and transform.py (image_transform).
"""

from __future__ import annotations

import logging
import re

from pipeline.backbone.families._hf import renamed
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

    def image_text(self, found: Found, tokenizer=None):
        """open_clip's HFTextEncoder over a BERT (`text.transformer.*`: PubMedBERT for BiomedCLIP; BERT-base's
        64-wide heads, LayerNorm eps 1e-12, exact GELU, as its config), pooled per text_cfg.hf_pooler_type and
        projected by `text.proj.*`; `visual.head.proj`; `logit_scale`; the folder's tokenizer (tokenizer.json,
        else vocab.txt). The image side needs the trunk's class-token pooling (timm_pool '' or 'token', no
        fc_norm), which is what the store keeps as the last layer's global token."""
        import torch

        from pipeline.backbone.checkpoint import file_sha256
        from pipeline.zeroshot.alignment import ImageText
        from pipeline.zeroshot.text import bert_text_from
        from pipeline.zeroshot.tokenize import bert_folder, find_tokenizer_files

        cfg = found.config("open_clip_config.json")["model_cfg"]
        vision, text_cfg = cfg.get("vision_cfg") or {}, cfg.get("text_cfg") or {}
        where = f"{found.folder}/open_clip_config.json"
        sd = found.state_dict()
        if vision.get("timm_pool", "") not in ("", "token") or any(k.startswith("visual.trunk.fc_norm.") for k in sd):
            raise CheckpointError(f"{where}: zero-shot needs the trunk's class token (timm_pool '' or 'token')")
        if not text_cfg.get("hf_model_name"):
            raise CheckpointError(f"{where}: text_cfg is not a HuggingFace text model (hf_model_name)")
        pooler = _POOLERS.get(text_cfg.get("hf_pooler_type") or "cls_pooler")
        if pooler is None:
            raise CheckpointError(f"{where}: hf_pooler_type {text_cfg['hf_pooler_type']!r} is not supported")
        files = find_tokenizer_files(
            tokenizer or found.folder, (("tokenizer.json",), ("vocab.txt",)), self.name,
            "BiomedCLIP's hf-hub folder holds PubMedBERT's tokenizer files beside open_clip_config.json; copy them "
            "there or pass --tokenizer FOLDER.",
        )  # fmt: skip
        text = {
            renamed(k.removeprefix("text."), _TEXT_RENAMES): v
            for k, v in sd.items()
            if k.startswith("text.") and not k.endswith("position_ids")
            and not (pooler != "pooler" and k.startswith("text.transformer.pooler."))
        }  # fmt: skip
        text = _fused_bert_qkv(text)
        width = text["word_embeddings.weight"].shape[1] if "word_embeddings.weight" in text else 64
        tower = bert_text_from(text, heads=max(1, width // 64), eps=1e-12, pooler=pooler, source=str(found.weights))
        context = min(int(text_cfg.get("context_length", 77)), tower.position_embeddings.weight.shape[0])
        if "visual.head.proj.weight" not in sd or "logit_scale" not in sd:
            raise CheckpointError(f"{found.weights}: no visual.head.proj or logit_scale; zero-shot needs both")
        bias = sd.get("visual.head.proj.bias")
        return ImageText(
            family=self.name, sha256=file_sha256(found.weights), image_projection=sd["visual.head.proj.weight"].float(),
            image_bias=None if bias is None else bias.float(), text=tower, tokenizer=bert_folder(files, context),
            logit_scale=float(torch.exp(sd["logit_scale"].float())), source=str(found.weights),
        )  # fmt: skip


# open_clip hf_model.py poolers -> pipeline/zeroshot/text.py BertText's
_POOLERS = {"cls_last_hidden_state_pooler": "cls", "mean_pooler": "mean", "cls_pooler": "pooler"}
_B = r"^transformer\.encoder\.layer\.(\d+)\."
_TEXT_RENAMES = (  # transformers BertModel -> BertText
    (r"^transformer\.embeddings\.LayerNorm\.", "embeddings_norm."),
    (r"^transformer\.embeddings\.", ""),
    (_B + r"attention\.output\.dense\.", r"blocks.\1.attn.out_proj."),
    (_B + r"attention\.output\.LayerNorm\.", r"blocks.\1.ln_1."),
    (_B + r"intermediate\.dense\.", r"blocks.\1.mlp.fc1."),
    (_B + r"output\.dense\.", r"blocks.\1.mlp.fc2."),
    (_B + r"output\.LayerNorm\.", r"blocks.\1.ln_2."),
    (r"^transformer\.pooler\.dense\.", "pooler."),
)
_BERT_QKV = re.compile(_B + r"attention\.self\.(query|key|value)\.(weight|bias)$")


def _fused_bert_qkv(text: dict) -> dict:
    """BERT's separate query/key/value as one `blocks.N.attn.in_proj_*` (an incomplete triple keeps its keys)."""
    import torch

    out, parts = {}, {}
    for k, v in text.items():
        if m := _BERT_QKV.match(k):
            parts.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = (k, v)
        else:
            out[k] = v
    for (layer, kind), qkv in parts.items():
        if sorted(qkv) == ["key", "query", "value"]:
            out[f"blocks.{layer}.attn.in_proj_{kind}"] = torch.cat([qkv[n][1] for n in ("query", "key", "value")])
        else:
            out.update(dict(qkv.values()))
    return out


register(
    OpenCLIPTimmFamily(
        name="biomedclip",
        summary="BiomedCLIP and other open_clip hf-hub folders with a timm ViT image tower (visual.trunk.*)",
        expects="folder: open_clip_config.json (vision_cfg.timm_model_name) + open_clip_pytorch_model.bin "
        "or open_clip_model.safetensors [+ tokenizer.json or vocab.txt, for zero-shot]",
        preprocessing="open_clip eval transform from preprocess_cfg: short side resize, centre crop, "
        "bicubic+antialias, its mean/std",
        follows="mlfoundations/open_clip timm_model.py, push_to_hf_hub.py, transform.py",
        priority=10,
        by_config=True,
    )
)
