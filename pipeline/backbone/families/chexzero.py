"""CheXzero (rajpurkarlab/CheXzero) and other OpenAI-CLIP ViT state dicts: a flat, mixed fp16/fp32 state dict
(`visual.conv1`, `visual.class_embedding`, `visual.positional_embedding`, `visual.ln_pre`,
`visual.transformer.resblocks.N.{ln_1, attn.in_proj_*, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}`,
`visual.ln_post`, `visual.proj`, plus the text tower), as `torch.save(model.state_dict())` of openai/CLIP
`model.py` writes it.

Built as a timm VisionTransformer the way timm builds its CLIP towers: `pre_norm` (ln_pre), patch embedding
without bias, LayerNorm eps 1e-5, QuickGELU; the CLS slot of the position table is folded into the class
token (exact: both are added before ln_pre). Heads: width / 64 as openai/CLIP `build_model` (`--num-heads`
overrides). Tokens: each of the last L blocks through `ln_post` (CLIP applies it to the class token; chex to
every token, as DINOv2's norm=True). Set aside, not part of the image backbone: `visual.proj` (image-text
projection) and the text tower (logged); `image_text` builds them for zero-shot (Table III).
Preprocessing: CheXzero's — pad the long side on black to a square (data_process.py `preprocess`), bicubic
resize to 224 (zero_shot.py), Normalize(101.48761, 83.43944) on the 0-255 scale (= /255 here). CheXzero
itself resizes in two steps (PIL antialias to 320 long side before padding, then a tensor bicubic to 224);
chex resizes once with antialiased bicubic.
"""

from __future__ import annotations

import logging

from pipeline.backbone.families._hf import renamed
from pipeline.backbone.found import Found
from pipeline.backbone.registry import Family, register
from pipeline.errors import CheckpointError

log = logging.getLogger(__name__)

MEAN_255, STD_255 = 101.48761, 83.43944
TOKENS = (
    "clip-vit: global = class token, patch = patch tokens (row-major), no registers, each of the last L blocks "
    "through ln_post"
)
_RENAMES = (
    (r"^visual\.conv1\.", "patch_embed.proj."),
    (r"^visual\.ln_pre\.", "norm_pre."),
    (r"^visual\.ln_post\.", "norm."),
    (r"^visual\.transformer\.resblocks\.(\d+)\.ln_([12])\.", r"blocks.\1.norm\2."),
    (r"^visual\.transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$", r"blocks.\1.attn.qkv.\2"),
    (r"^visual\.transformer\.resblocks\.(\d+)\.attn\.out_proj\.", r"blocks.\1.attn.proj."),
    (r"^visual\.transformer\.resblocks\.(\d+)\.mlp\.c_fc\.", r"blocks.\1.mlp.fc1."),
    (r"^visual\.transformer\.resblocks\.(\d+)\.mlp\.c_proj\.", r"blocks.\1.mlp.fc2."),
)
_NOT_TEXT = ("logit_scale", "input_resolution", "context_length", "vocab_size")  # the last three: JIT archives
# openai/CLIP's text transformer keys -> pipeline/zeroshot/text.py CLIPText's
_TEXT_RENAMES = (
    (r"^transformer\.resblocks\.(\d+)\.mlp\.c_fc\.", r"blocks.\1.mlp.fc1."),
    (r"^transformer\.resblocks\.(\d+)\.mlp\.c_proj\.", r"blocks.\1.mlp.fc2."),
    (r"^transformer\.resblocks\.", "blocks."),
)


def is_openai_clip(keys) -> bool:
    keys = set(keys)
    return "visual.conv1.weight" in keys and "visual.transformer.resblocks.0.attn.in_proj_weight" in keys


def openai_clip_visual(sd: dict) -> tuple[dict, list[str]]:
    """(the image tower in timm's ViT layout, float32; the keys set aside: visual.proj and the text tower)."""
    from pipeline.backbone.converters import fold_prefix_pos_embed

    out, aside = {}, []
    for k, v in sd.items():
        if not k.startswith("visual.") or k == "visual.proj":
            aside.append(k)
            continue
        v = v.float()
        if k == "visual.class_embedding":
            out["cls_token"] = v.reshape(1, 1, -1)
            continue
        if k == "visual.positional_embedding":
            out["pos_embed"] = v.unsqueeze(0)
            continue
        out[renamed(k, _RENAMES)] = v
    return fold_prefix_pos_embed(out), aside


class CheXzeroFamily(Family):
    def recognise(self, found: Found) -> bool:
        return "open_clip_config.json" not in found.configs and is_openai_clip(found.keys())

    def load(self, found: Found, image_size: int | None = None, num_heads: int | None = None):
        from pipeline.backbone.checkpoint import file_sha256
        from pipeline.backbone.families._vit import clip_vit_backbone
        from pipeline.embed.preprocess import Preprocessing

        sd, aside = openai_clip_visual(dict(found.state_dict()))
        if aside:
            log.info("set aside (not the image backbone): visual.proj and the text tower, %d keys", len(aside))
        width = sd["cls_token"].shape[-1]

        def preprocessing(size: int) -> Preprocessing:
            return Preprocessing(
                size, (MEAN_255 / 255,) * 3, (STD_255 / 255,) * 3, resize="pad_square+resize",
                interpolation="bicubic+antialias",
            )  # fmt: skip

        return clip_vit_backbone(
            self.name, sd, heads=num_heads or max(1, width // 64), act="quick_gelu", eps=1e-5, image_size=image_size,
            preprocessing=preprocessing, sha256=file_sha256(found.weights), source=str(found.weights),
            token_convention=TOKENS, norm="ln_post applied to each layer's tokens",
        )  # fmt: skip

    def image_text(self, found: Found, tokenizer=None):
        """CheXzero's text tower (openai/CLIP `encode_text`: causal, QuickGELU, width / 64 heads, ln_final, EOT
        pooling, text_projection), `visual.proj`, `logit_scale` and openai/CLIP's BPE tokenizer
        (bpe_simple_vocab_16e6.txt.gz beside the weights, or at `tokenizer`)."""
        import torch

        from pipeline.backbone.checkpoint import file_sha256
        from pipeline.zeroshot.alignment import ImageText
        from pipeline.zeroshot.text import clip_text_from
        from pipeline.zeroshot.tokenize import OPENAI_BPE, find_tokenizer_files, openai_clip_bpe

        sd = found.state_dict()
        files = find_tokenizer_files(
            tokenizer or found.weights.parent, ((OPENAI_BPE,),), self.name,
            "CheXzero tokenizes with openai/CLIP's BPE vocabulary (clip/bpe_simple_vocab_16e6.txt.gz in openai/CLIP "
            "or rajpurkarlab/CheXzero): put it beside the checkpoint or pass --tokenizer FILE.",
        )  # fmt: skip
        text = {
            renamed(k, _TEXT_RENAMES): v for k, v in sd.items() if k.split(".")[0] != "visual" and k not in _NOT_TEXT
        }
        width = text["token_embedding.weight"].shape[1] if "token_embedding.weight" in text else 64
        tower = clip_text_from(text, heads=max(1, width // 64), act="quick_gelu", eps=1e-5, source=str(found.weights))
        if "visual.proj" not in sd or "logit_scale" not in sd:
            raise CheckpointError(f"{found.weights}: no visual.proj or logit_scale; not a whole CLIP state dict")
        prompt_tokenizer = openai_clip_bpe(files[OPENAI_BPE], tower.positional_embedding.shape[0])
        return ImageText(
            family=self.name, sha256=file_sha256(found.weights), image_projection=sd["visual.proj"].float().T,
            image_bias=None, text=tower, tokenizer=prompt_tokenizer, source=str(found.weights),
            logit_scale=float(torch.exp(sd["logit_scale"].float())),
        )  # fmt: skip


register(
    CheXzeroFamily(
        name="chexzero",
        summary="CheXzero and other OpenAI-CLIP ViT state dicts (image tower; its text tower for `chex zeroshot`)",
        expects="a .pt state dict with visual.conv1.*, visual.transformer.resblocks.N.attn.in_proj_*, visual.ln_post "
        "[+ bpe_simple_vocab_16e6.txt.gz beside it, for zero-shot]",
        preprocessing="CheXzero: pad square on black, bicubic+antialias to 224, mean/std 101.48761/83.43944 on 0-255",
        follows="openai/CLIP clip/model.py (build_model); rajpurkarlab/CheXzero data_process.py, zero_shot.py",
        priority=35,
    )
)
