"""EVA-X (hustvl/EVA-X): the released MIM checkpoints `eva_x_{tiny,small,base}_patch16_merged520k_mim.pt`
(`{'model': ...}` plus a numpy scalar, read through the weights-only numpy allow-list) and EVA-X classification
fine-tunes. EVA-02 pretraining layout (baaivision/EVA EVA-02/asuka modeling_pretrain.py, which EVA-X's
classification/models/models_eva.py copies): `cls_token`, `mask_token`, `pos_embed` (CLS slot first),
`patch_embed.proj`, 2-D RoPE tables (`rope.freqs_cos/sin`, repeated in each block), `norm`, `lm_head`; blocks
- Ti/S: fused `attn.qkv.weight` + `attn.q_bias` / `attn.v_bias` (k has no bias), packed SwiGLU `mlp.w12` / `mlp.w3`
  (xformers SwiGLU: first half of w12 is the SiLU gate);
- B: `attn.{q,k,v}_proj.weight` + `q_bias` / `v_bias`, SwiGLU `mlp.w1` (gate) / `mlp.w2` + `mlp.ffn_ln` + `mlp.w3`.

Built with timm's `Eva` (EVA-X's own eva_x.py does the same), keys mapped as eva_x.py `checkpoint_filter_fn`
maps them but strictly: `mask_token` and `lm_head` (MIM only) and a fine-tune's `head` are left out (logged); the
RoPE tables are recomputed by timm (`ref_feat_shape` = the pretraining grid, EVA-02 `VisionRotaryEmbeddingFast`
with `intp_freq`) and checked against the file's; anything else unmapped is listed by the strict load.
Heads from the RoPE table's width (head_dim); without one, width / 64 (`--num-heads` overrides).
Another input size: `pos_embed` resampled bicubic without antialias, CLS slot kept (EVA-X utils/eva_utils.py
`load_weights_for_eva`); RoPE positions scaled to the pretraining grid (pt_hw_seq_len / ft_seq_len).
Tokens: each of the last L blocks' patch tokens through the final norm (the MIM `norm`; a fine-tune's `fc_norm`);
global token = the final norm of the mean patch token, EVA-X's pooled representation (eva_x.py `forward_head`
with avg pooling and `norm` moved to `fc_norm`; every EVA-X classification script uses `--use_mean_pooling`).
The class token is not stored (MIM never trains it; EVA-X never reads it). No registers.
Preprocessing: EVA-X classification/utils/datasets.py `build_transform` (eval): resize the short side to
int(size / crop_pct) with crop_pct 224/256 up to 224 px (1.0 above), bicubic (PIL, so antialiased), centre crop,
Normalize(0.49185243, 0.28509309) on [0, 1] for every channel.
"""

from __future__ import annotations

import logging
import math
import re

from pipeline.backbone.found import Found
from pipeline.backbone.registry import Family, register
from pipeline.errors import CheckpointError

log = logging.getLogger(__name__)

MEAN, STD = 0.49185243, 0.28509309
TOKENS = (
    "eva-x: global = final norm of the mean patch token of each of the last L blocks (EVA-X's pooled "
    "representation), patch = patch tokens (row-major) through the final norm, no registers, class token not stored"
)
_RENAMES = (
    (r"^(blocks\.\d+\.mlp\.)w12\.", r"\1fc1."),
    (r"^(blocks\.\d+\.mlp\.)w1\.", r"\1fc1_g."),
    (r"^(blocks\.\d+\.mlp\.)w2\.", r"\1fc1_x."),
    (r"^(blocks\.\d+\.mlp\.)w3\.", r"\1fc2."),
    (r"^(blocks\.\d+\.mlp\.)ffn_ln\.", r"\1norm."),
    (r"^(blocks\.\d+\.attn\.)inner_attn_ln\.", r"\1norm."),
)
_ASIDE = re.compile(r"^(mask_token$|lm_head\.|head\.)")
_ROPE = re.compile(r"^(blocks\.\d+\.attn\.)?rope\.freqs_(cos|sin)$")


def is_eva_x(keys) -> bool:
    keys = set(keys)
    has_attn = "blocks.0.attn.qkv.weight" in keys or "blocks.0.attn.q_proj.weight" in keys
    eva_signs = "blocks.0.attn.q_bias" in keys or "rope.freqs_cos" in keys
    return "patch_embed.proj.weight" in keys and "pos_embed" in keys and has_attn and eva_signs


def eva_x_filter(sd: dict) -> tuple[dict, dict, list[str]]:
    """(EVA-02 / EVA-X keys in timm Eva's layout, the file's RoPE tables, the keys set aside)."""
    from pipeline.backbone.families._hf import renamed

    separate_qkv = "blocks.0.attn.q_proj.weight" in sd
    has_norm = "norm.weight" in sd
    out, rope, aside = {}, {}, []
    for k, v in sd.items():
        if _ASIDE.match(k):
            aside.append(k)
            continue
        if m := _ROPE.match(k):
            rope.setdefault(m.group(2), v)
            continue
        k = renamed(k, _RENAMES)
        if separate_qkv:
            k = re.sub(r"^(blocks\.\d+\.attn\.)([qv])_bias$", r"\1\2_proj.bias", k)
        if not has_norm and k.startswith("fc_norm."):  # an EVA-X fine-tune pooled with fc_norm: its final norm
            k = k.removeprefix("fc_")
        out[k] = v.float()
    return out, rope, aside


def eva_x_tokens(model, x, n_layers: int):
    """(global (B,L,D), patch (B,L,P,D), registers (B,L,0,D)) of the last `n_layers` blocks."""
    import torch

    depth = len(model.blocks)
    if not 1 <= n_layers <= depth:
        raise ValueError(f"n_layers must be in 1..{depth}, got {n_layers}")
    out = model.forward_intermediates(
        x, indices=n_layers, return_prefix_tokens=True, norm=False, stop_early=True, output_fmt="NLC",
        intermediates_only=True,
    )  # fmt: skip
    spatial = torch.stack([s for s, _ in out], dim=1)  # (B, L, P, D), before the final norm
    pooled = model.norm(spatial.mean(2))
    patch = model.norm(spatial)
    return pooled, patch, patch.new_zeros((*patch.shape[:2], 0, patch.shape[-1]))


def eva_x_preprocessing(size: int):
    """EVA-X's eval transform at input size `size` (classification/utils/datasets.py build_transform)."""
    from pipeline.embed.preprocess import Preprocessing

    crop_pct = 224 / 256 if size <= 224 else 1.0
    resize_to = int(size / crop_pct)
    return Preprocessing(
        size, (MEAN,) * 3, (STD,) * 3, interpolation="bicubic+antialias",
        resize_to=None if resize_to == size else resize_to,
    )  # fmt: skip


def _arch(sd: dict, rope: dict, num_heads: int | None) -> dict:
    dim = sd["cls_token"].shape[-1]
    patch = sd["patch_embed.proj.weight"].shape[-1]
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"^blocks\.(\d+)\.", k)))
    n_pos = sd["pos_embed"].shape[1] - 1
    grid = math.isqrt(n_pos)
    if grid * grid != n_pos:
        raise CheckpointError(f"EVA-X pos_embed has {n_pos + 1} positions: not a class slot plus a square grid")
    if num_heads is None:
        num_heads = dim // rope["cos"].shape[-1] if "cos" in rope else max(1, dim // 64)
    if "blocks.0.mlp.fc1.weight" in sd and "blocks.0.mlp.fc2.weight" in sd:
        swiglu = sd["blocks.0.mlp.fc2.weight"].shape[1] * 2 == sd["blocks.0.mlp.fc1.weight"].shape[0]
        hidden = sd["blocks.0.mlp.fc2.weight"].shape[1]
    else:
        swiglu, hidden = True, sd["blocks.0.mlp.fc1_g.weight"].shape[0]
    ratio = hidden / dim
    if int(dim * ratio) != hidden:  # Eva builds int(dim * mlp_ratio) hidden units
        ratio = (hidden + 0.5) / dim
    return dict(
        embed_dim=dim, depth=depth, num_heads=num_heads, patch_size=patch, ref_grid=grid, mlp_ratio=ratio,
        swiglu_mlp=swiglu, scale_mlp="blocks.0.mlp.norm.weight" in sd,
        qkv_fused="blocks.0.attn.qkv.weight" in sd,
        qkv_bias="blocks.0.attn.q_bias" in sd or "blocks.0.attn.q_proj.bias" in sd,
        scale_attn_inner="blocks.0.attn.norm.weight" in sd,
        init_values=1.0 if "blocks.0.gamma_1" in sd else None,
    )  # fmt: skip


def _check_rope(rope: dict, dim: int, heads: int, ref_grid: int, source: str) -> None:
    """The file's RoPE tables (EVA-02 VisionRotaryEmbeddingFast on the pretraining grid) equal timm's
    `RotaryEmbeddingCat` with the settings the model is built with (Eva `rope_type='cat'`, language bands)."""
    import torch
    from timm.layers import RotaryEmbeddingCat

    if not rope:
        return
    grid = [ref_grid, ref_grid]
    emb = RotaryEmbeddingCat(dim // heads, in_pixels=False, feat_shape=grid, ref_feat_shape=grid).get_embed()
    sin, cos = emb.chunk(2, dim=-1)
    for name, table in (("cos", cos), ("sin", sin)):
        saved = rope.get(name)
        if saved is not None and (saved.shape != table.shape or not torch.allclose(saved.float(), table, atol=1e-4)):
            raise CheckpointError(
                f"{source}: rope.freqs_{name} {tuple(saved.shape)} is not EVA-02's 2-D RoPE on the "
                f"{ref_grid}x{ref_grid} pretraining grid with {heads} heads of width {dim // heads} (try --num-heads)"
            )


class EvaXFamily(Family):
    def recognise(self, found: Found) -> bool:
        return not found.configs.get("open_clip_config.json") and is_eva_x(found.keys())

    def load(self, found: Found, image_size: int | None = None, num_heads: int | None = None):
        from functools import partial

        from timm.layers import LayerNorm, resample_abs_pos_embed
        from timm.models.eva import Eva

        from pipeline.backbone.checkpoint import file_sha256, load_state_dict_strict
        from pipeline.backbone.interface import Backbone

        source = str(found.weights)
        sd, rope, aside = eva_x_filter(dict(found.state_dict()))
        if aside:
            log.info("set aside (not the image backbone): %s", ", ".join(sorted(aside)[:6]))
        arch = _arch(sd, rope, num_heads)
        ref, patch = arch["ref_grid"], arch["patch_size"]
        size = image_size or ref * patch
        if size % patch:
            raise CheckpointError(f"EVA-X input size {size} is not a multiple of its patch size {patch}")
        grid = size // patch
        _check_rope(rope, arch["embed_dim"], arch["num_heads"], ref, source)
        model = Eva(
            img_size=size, patch_size=patch, num_classes=0, embed_dim=arch["embed_dim"], depth=arch["depth"],
            num_heads=arch["num_heads"], qkv_bias=arch["qkv_bias"], qkv_fused=arch["qkv_fused"],
            mlp_ratio=arch["mlp_ratio"], swiglu_mlp=arch["swiglu_mlp"], scale_mlp=arch["scale_mlp"],
            scale_attn_inner=arch["scale_attn_inner"], init_values=arch["init_values"],
            norm_layer=partial(LayerNorm, eps=1e-6), use_rot_pos_emb=True, ref_feat_shape=(ref, ref),
            use_fc_norm=False, use_post_transformer_norm=True,
        )  # fmt: skip
        if grid != ref:
            log.info("interpolating positional embeddings %dx%d -> %dx%d", ref, ref, grid, grid)
            sd["pos_embed"] = resample_abs_pos_embed(
                sd["pos_embed"], new_size=(grid, grid), old_size=(ref, ref), num_prefix_tokens=1, antialias=False
            )
        load_state_dict_strict(model, sd, source=source)
        model.eval()
        layout = "fused qkv, packed SwiGLU" if arch["qkv_fused"] else "q/k/v projections, SwiGLU + ffn_ln"
        config = {"arch": "eva-x", **{k: v for k, v in arch.items() if k != "mlp_ratio"}, "img_size": size}
        return Backbone(
            family=self.name, model=model, config=config, sha256=file_sha256(found.weights),
            preprocessing=eva_x_preprocessing(size), dim=arch["embed_dim"], depth=arch["depth"], n_registers=0,
            grid=(grid, grid), token_fn=eva_x_tokens, token_convention=TOKENS,
            norm="the final norm (MIM norm / fine-tune fc_norm) on each patch token and on the mean patch token",
            details={"layout": layout},
        )  # fmt: skip


register(
    EvaXFamily(
        name="eva-x",
        summary="EVA-X MIM checkpoints (eva_x_{tiny,small,base}_patch16_merged520k_mim.pt) and EVA-X fine-tunes",
        expects="a .pt {'model': ...} with blocks.N.attn.q_bias / v_bias, rope.freqs_*, pos_embed, patch_embed.* "
        "(Ti/S: attn.qkv + mlp.w12/w3; B: attn.q/k/v_proj + mlp.w1/w2/ffn_ln/w3)",
        preprocessing="EVA-X eval: short side -> int(size/crop_pct) (crop_pct 224/256 up to 224 px), centre crop, "
        "bicubic+antialias, mean/std 0.49185243/0.28509309",
        follows="hustvl/EVA-X eva_x.py (timm Eva, checkpoint_filter_fn), classification/models/models_eva.py, "
        "utils/eva_utils.py, utils/datasets.py; baaivision/EVA EVA-02/asuka modeling_pretrain.py, rope.py",
        priority=25,
    )
)
