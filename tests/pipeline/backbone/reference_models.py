"""Small re-implementations of the foreign source models, written in their own checkpoint layouts.

Each follows the source repository's module structure and key names (DINOv2 `vision_transformer.py`,
MAE `models_mae.py`), so its state dict is what those repositories save; the tests compare chex's tokens
with these models' own intermediate outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1)
        x = attn.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwiGLUFFNFused(nn.Module):
    """DINOv2's fused SwiGLU: hidden = (int(hidden * 2 / 3) + 7) // 8 * 8."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12, self.w3 = nn.Linear(dim, 2 * hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.randn(dim) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, swiglu: bool, layer_scale: bool) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.mlp = SwiGLUFFNFused(dim, 4 * dim) if swiglu else Mlp(dim, 4 * dim)
        self.ls1 = LayerScale(dim) if layer_scale else nn.Identity()
        self.ls2 = LayerScale(dim) if layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class BlockChunk(nn.ModuleList):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self:
            x = b(x)
        return x


class DinoVisionTransformer(nn.Module):
    """DINOv2's ViT: pos_embed covers CLS + patches; registers inserted after the CLS, without position."""

    def __init__(
        self, img=32, patch=8, dim=64, depth=4, heads=2, n_reg=4, swiglu=True, layer_scale=True, chunks=2
    ) -> None:
        super().__init__()
        n = (img // patch) ** 2
        self.patch_embed = PatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, dim) * 0.5)
        self.register_tokens = nn.Parameter(torch.randn(1, n_reg, dim)) if n_reg else None
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.n_reg = n_reg
        blocks = [Block(dim, heads, swiglu, layer_scale) for _ in range(depth)]
        if chunks > 1:
            size = depth // chunks
            self.chunked = True
            self.blocks = nn.ModuleList(
                BlockChunk([nn.Identity()] * i + blocks[i : i + size]) for i in range(0, depth, size)
            )
        else:
            self.chunked = False
            self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        if self.register_tokens is not None:
            x = torch.cat((x[:, :1], self.register_tokens.expand(x.shape[0], -1, -1), x[:, 1:]), dim=1)
        return x

    def get_intermediate_layers(self, x: torch.Tensor, n: int = 4) -> list[torch.Tensor]:
        """Last n blocks' outputs through the final norm (DINOv2 with norm=True, tokens kept whole)."""
        x = self._prepare(x)
        blocks = [b for chunk in self.blocks for b in chunk] if self.chunked else list(self.blocks)
        blocks = [b for b in blocks if not isinstance(b, nn.Identity)]
        outs = []
        for i, b in enumerate(blocks):
            x = b(x)
            if i >= len(blocks) - n:
                outs.append(self.norm(x))
        return outs


class MaskedAutoencoderViT(nn.Module):
    """MAE's encoder (+ a decoder whose keys a pretraining checkpoint also holds)."""

    def __init__(self, img=32, patch=8, dim=64, depth=4, heads=2, dec_dim=32) -> None:
        super().__init__()
        n = (img // patch) ** 2
        self.patch_embed = PatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, dim) * 0.5, requires_grad=False)
        self.blocks = nn.ModuleList(Block(dim, heads, swiglu=False, layer_scale=False) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.decoder_embed = nn.Linear(dim, dec_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, n + 1, dec_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList([Block(dec_dim, 2, swiglu=False, layer_scale=False)])
        self.decoder_norm = nn.LayerNorm(dec_dim)
        self.decoder_pred = nn.Linear(dec_dim, patch * patch * 3)

    def get_intermediate_layers(self, x: torch.Tensor, n: int = 4) -> list[torch.Tensor]:
        x = self.patch_embed(x) + self.pos_embed[:, 1:]
        cls = self.cls_token + self.pos_embed[:, :1]
        x = torch.cat((cls.expand(x.shape[0], -1, -1), x), dim=1)
        outs = []
        for i, b in enumerate(self.blocks):
            x = b(x)
            if i >= len(self.blocks) - n:
                outs.append(self.norm(x))
        return outs
