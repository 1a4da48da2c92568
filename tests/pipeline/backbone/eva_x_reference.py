"""EVA-X's reference forward, transcribed for the tests (EVA-X's code is not pip-installable: it imports xformers and
apex at module level). Written from reading hustvl/EVA-X classification/models/models_eva.py (Attention, SwiGLU,
Block, PatchEmbed, VisionTransformer), the EVA-02 pretraining model its MIM checkpoints were saved from
(baaivision/EVA EVA-02/asuka modeling_pretrain.py `VisionTransformerForMaskedImageModeling`) and rope.py
(`VisionRotaryEmbeddingFast`). Kept: what a frozen forward computes. Left out: dropout, drop path, relative position
biases, postnorm/deepnorm (not used by EVA-X), gradient checkpointing. xformers' `memory_efficient_attention`
(xattn=True in EVA-X's configs) computes softmax(q kᵀ · scale) v, written here as the explicit (qk_float) path;
xformers' packed `SwiGLU` (Ti/S) is written out as xformers defines it (w12 = [w1; w2], silu(x w1) * (x w2) -> w3);
FusedLayerNorm(eps=1e-6) is LayerNorm(eps=1e-6). Module and parameter names are EVA-X's, so `state_dict()` is
the release layout (including the RoPE buffers every block repeats).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """rope.py rotate_half: pairs (x[2i], x[2i+1]) -> (-x[2i+1], x[2i]) ('... (d r) -> ... d r', r=2)."""
    pairs = x.unflatten(-1, (-1, 2))
    x1, x2 = pairs.unbind(-1)
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


class VisionRotaryEmbeddingFast(nn.Module):
    """rope.py: language frequencies over `dim` (= head_dim / 2) per axis, positions t = arange(ft) / ft * pt,
    each frequency repeated for its pair, rows' then columns' angles concatenated ('broadcat')."""

    def __init__(self, dim: int, pt_seq_len: int, ft_seq_len: int | None = None, theta: float = 10000.0):
        super().__init__()
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
        ft = ft_seq_len or pt_seq_len
        t = torch.arange(ft) / ft * pt_seq_len
        f = torch.einsum("i,f->if", t, freqs).repeat_interleave(2, dim=-1)  # (ft, dim)
        grid = torch.cat((f[:, None, :].expand(ft, ft, -1), f[None, :, :].expand(ft, ft, -1)), dim=-1)
        self.register_buffer("freqs_cos", grid.cos().reshape(-1, grid.shape[-1]))
        self.register_buffer("freqs_sin", grid.sin().reshape(-1, grid.shape[-1]))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return t * self.freqs_cos + rotate_half(t) * self.freqs_sin


class Attention(nn.Module):
    """models_eva.py Attention: no k bias; q_bias/v_bias; fused qkv (Ti/S) or q/k/v_proj (subln, B); RoPE on the
    patch tokens (all but the first)."""

    def __init__(self, dim: int, num_heads: int, subln: bool, rope: nn.Module):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.subln = subln
        if subln:
            self.q_proj = nn.Linear(dim, dim, bias=False)
            self.k_proj = nn.Linear(dim, dim, bias=False)
            self.v_proj = nn.Linear(dim, dim, bias=False)
        else:
            self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        if self.subln:
            q = F.linear(x, self.q_proj.weight, self.q_bias)
            k = F.linear(x, self.k_proj.weight, None)
            v = F.linear(x, self.v_proj.weight, self.v_bias)
            q, k, v = (t.reshape(B, N, self.num_heads, -1).permute(0, 2, 1, 3) for t in (q, k, v))
        else:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
            qkv = F.linear(x, self.qkv.weight, bias).reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
        q = torch.cat((q[:, :, :1], self.rope(q[:, :, 1:])), -2).type_as(v)
        k = torch.cat((k[:, :, :1], self.rope(k[:, :, 1:])), -2).type_as(v)
        attn = ((q * self.scale).float() @ k.float().transpose(-2, -1)).softmax(dim=-1).type_as(x)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, -1))


class PackedSwiGLU(nn.Module):
    """xformers.ops.SwiGLU (packed weights), as EVA-X's `swiglu=True` blocks use it."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w1, w2 = self.w12.weight.view(2, -1, self.w12.weight.shape[1]).unbind(0)
        b1, b2 = self.w12.bias.view(2, -1).unbind(0)
        return self.w3(F.silu(F.linear(x, w1, b1)) * F.linear(x, w2, b2))


class SwiGLU(nn.Module):
    """models_eva.py SwiGLU (`naiveswiglu=True`, with `ffn_ln` when subln)."""

    def __init__(self, dim: int, hidden: int, subln: bool):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden)
        self.w2 = nn.Linear(dim, hidden)
        self.ffn_ln = nn.LayerNorm(hidden, eps=1e-6) if subln else nn.Identity()
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(self.ffn_ln(F.silu(self.w1(x)) * self.w2(x)))


class Block(nn.Module):
    """models_eva.py Block, pre-norm, no layer scale (init_values None)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, subln: bool, rope: nn.Module):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, subln, rope)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = SwiGLU(dim, hidden, subln) if subln else PackedSwiGLU(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class EvaXMIM(nn.Module):
    """modeling_pretrain.py VisionTransformerForMaskedImageModeling with EVA-X's settings (qkv_bias, rope,
    mlp_ratio 4 * 2 / 3; Ti/S: swiglu (packed); B: naiveswiglu + subln). `pt_grid` / `intp_freq` as models_eva.py
    builds RoPE for fine-tuning at another input size (pt_hw_seq_len, ft_seq_len = img_size // patch_size)."""

    def __init__(
        self, img_size: int, patch_size: int, dim: int, depth: int, num_heads: int, subln: bool,
        pt_grid: int | None = None, predict_dim: int = 8,
    ):  # fmt: skip
        super().__init__()
        grid = img_size // patch_size
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed(patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, dim))
        self.rope = VisionRotaryEmbeddingFast(dim // num_heads // 2, pt_seq_len=pt_grid or grid, ft_seq_len=grid)
        self.blocks = nn.ModuleList(Block(dim, num_heads, 4 * 2 / 3, subln, self.rope) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.lm_head = nn.Linear(dim, predict_dim)

    def block_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """forward_features without masking (bool_masked_pos all False): every block's output (B, 1+P, D)."""
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        outs = []
        for blk in self.blocks:
            x = blk(x)
            outs.append(x)
        return outs

    def tokens(self, x: torch.Tensor, n_layers: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled (B,L,D), patch (B,L,P,D)): the last blocks' patch tokens through `norm`, and `norm` of their mean
        (eva_x.py forward_head: mean over x[:, 1:], then fc_norm = the MIM norm)."""
        outs = self.block_outputs(x)[-n_layers:]
        patch = torch.stack([self.norm(o[:, 1:]) for o in outs], dim=1)
        pooled = torch.stack([self.norm(o[:, 1:].mean(1)) for o in outs], dim=1)
        return pooled, patch


def interpolated_pos_embed(pos_embed: torch.Tensor, new_grid: int) -> torch.Tensor:
    """EVA-X utils/eva_utils.py load_weights_for_eva: bicubic (align_corners=False) over the patch positions, the
    class slot kept."""
    extra, tokens = pos_embed[:, :1], pos_embed[:, 1:]
    old = int(tokens.shape[1] ** 0.5)
    tokens = tokens.reshape(-1, old, old, tokens.shape[-1]).permute(0, 3, 1, 2)
    tokens = F.interpolate(tokens.float(), size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    return torch.cat((extra, tokens.permute(0, 2, 3, 1).flatten(1, 2)), dim=1)


def at_input_size(model: EvaXMIM, img_size: int, dim: int, depth: int, num_heads: int, subln: bool) -> EvaXMIM:
    """The model rebuilt at `img_size` as EVA-X fine-tunes it: positions interpolated, RoPE with pt_hw_seq_len =
    the pretraining grid and ft_seq_len = the new grid (intp_freq), the file's RoPE tables not loaded."""
    pt_grid = int((model.pos_embed.shape[1] - 1) ** 0.5)
    new = EvaXMIM(img_size, model.patch_size, dim, depth, num_heads, subln, pt_grid=pt_grid).eval()
    sd = {k: v for k, v in model.state_dict().items() if "rope." not in k}
    sd["pos_embed"] = interpolated_pos_embed(sd["pos_embed"], img_size // model.patch_size)
    missing, unexpected = new.load_state_dict(sd, strict=False)
    assert not unexpected and all("rope." in k for k in missing), (missing, unexpected)
    return new
