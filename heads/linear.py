"""Linear probe (DINOv2 / CheXFound linear eval): concatenated CLS of the last L blocks -> one linear layer.

With `avgpool=True` the mean of the last block's patch tokens is appended (DINOv2's `use_avgpool`), so the
input is L·D + D wide and the head reads patch tokens from the store; without it only the CLS tokens are read.
On a projected store (patch rows (B, 1, P, R)) the appended feature is the mean projected token (R wide,
`patch_dim`): W' = W_L U_L on it is the same model as W_L on the reconstructed last block's mean token.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from heads.base import Head, concat_blocks, stacked_linear


class LinearHead(Head):
    """logits (B, K) = W · [cls_1 .. cls_L (; mean patch of block L)] + b."""

    name = "linear"

    def __init__(
        self, dim: int, n_layers: int, n_outputs: int, avgpool: bool = False, patch_dim: int | None = None
    ) -> None:
        extra = {"patch_dim": patch_dim} if avgpool and patch_dim else {}
        super().__init__(dim=dim, n_layers=n_layers, n_outputs=n_outputs, avgpool=avgpool, **extra)
        self.avgpool = avgpool
        self.needs_patch = avgpool
        in_features = dim * n_layers + ((patch_dim or dim) if avgpool else 0)
        self.linear = nn.Linear(in_features, n_outputs)
        # DINOv2's linear classifier init: small normal weights, zero bias.
        nn.init.normal_(self.linear.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.linear.bias)

    def features(self, cls: Tensor, patch: Tensor | None) -> Tensor:
        """The classifier input (B, F)."""
        feats = concat_blocks(cls)
        if self.avgpool:
            if patch is None:
                raise ValueError("LinearHead(avgpool=True) needs patch tokens")
            feats = torch.cat([feats, patch[:, -1].mean(dim=1)], dim=1)
        return feats

    def forward(self, cls: Tensor, patch: Tensor | None = None) -> Tensor:
        return self.linear(self.features(cls, patch))

    def stacked_forward(self, params: dict[str, Tensor], cls: Tensor, patch: Tensor | None, training: bool) -> Tensor:
        return stacked_linear(self.features(cls, patch), params["linear.weight"], params["linear.bias"])
