"""The backbone interface every family yields: a model plus how to feed it and how to read its tokens.

Tokens (`Backbone.tokens`): for each of the last L blocks, oldest first,
- `cls` (B, L, D): the global token (ViTs: the class token; CNNs: see the family's `token_convention`),
- `patch` (B, L, P, D): the spatial tokens on the grid `grid` = (h, w), row-major, P = h·w,
- `registers` (B, L, R, D): register tokens (R = 0 when the family has none).
All pass through the model's final norm (DINOv2 `get_intermediate_layers(norm=True)`). The store records
`family`, `token_convention`, `patch_grid` and the preprocessing, so readers never assume a square ViT grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

VIT_TOKENS = (
    "vit: global = class token, patch = patch tokens (row-major on the grid), registers = register tokens, "
    "each of the last L blocks passed through the final LayerNorm"
)
TokenFn = Callable[[nn.Module, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass
class Backbone:
    """A loaded backbone in eval mode and everything the embed stage needs to know about it."""

    family: str
    model: nn.Module
    config: dict[str, Any]  # the store's `backbone` attribute (identity: a resumed store must match it)
    sha256: str
    preprocessing: Any  # pipeline.embed.preprocess.Preprocessing
    dim: int
    depth: int
    n_registers: int
    grid: tuple[int, int]
    token_fn: TokenFn
    token_convention: str = VIT_TOKENS
    norm: str = "final LayerNorm applied to each layer (DINOv2 norm=True)"
    vit_config: Any = None  # BackboneConfig for families built as chex's timm ViT
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def n_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def tokens(self, x: torch.Tensor, n_layers: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(cls (B,L,D), patch (B,L,P,D), registers (B,L,R,D)) of the last `n_layers` blocks."""
        return self.token_fn(self.model, x, n_layers)

    def to(self, device: torch.device | str) -> Backbone:
        self.model.to(device)
        return self

    def store_attrs(self) -> dict[str, Any]:
        """Descriptive store attributes (not identity keys: stores written before them read unchanged)."""
        return dict(
            family=self.family,
            token_convention=self.token_convention,
            patch_grid=list(self.grid),
            norm=self.norm,
        )
