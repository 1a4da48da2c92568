"""Linear probe (DINOv2 / CheXFound linear eval): concatenated CLS of the last L blocks -> one linear layer.

With `avgpool=True` the mean of the last block's patch tokens is appended (DINOv2's `use_avgpool`), so the
input is L·D + D wide and the head reads patch tokens from the store; without it only the CLS tokens are read.
On a projected store (patch rows (B, 1, P, R)) the appended feature is the mean projected token (R wide): the
weights over it are folded from the full-width W_L each pass, W' = W_L U_L with bias b + W_L μ_L (U_L, μ_L: the
basis and mean rows of block L), the same model, trained the same way, as W_L on the reconstructed mean token.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from heads.base import Head, concat_blocks, fold_basis, stacked_linear


class LinearHead(Head):
    """logits (B, K) = W · [cls_1 .. cls_L (; mean patch of block L)] + b."""

    name = "linear"

    def __init__(
        self,
        dim: int,
        n_layers: int,
        n_outputs: int,
        avgpool: bool = False,
        projection: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        projection = projection if avgpool else None  # without avgpool no patch token is read
        extra = {"projection_rank": int(projection[1].shape[1])} if projection is not None else {}
        super().__init__(dim=dim, n_layers=n_layers, n_outputs=n_outputs, avgpool=avgpool, **extra)
        self.avgpool = avgpool
        self.needs_patch = avgpool
        self.dim = dim
        self.linear = nn.Linear(dim * n_layers + (dim if avgpool else 0), n_outputs)
        # DINOv2's linear classifier init: small normal weights, zero bias.
        nn.init.normal_(self.linear.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.linear.bias)
        if self.keep_basis(projection):  # only block L's rows are read: keep those
            self.basis_mean, self.basis = self.basis_mean[-dim:].clone(), self.basis[-dim:].clone()

    def fold(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.basis is None:
            return {}
        weight, n_cls = params["linear.weight"], params["linear.weight"].shape[-1] - self.dim
        w_patch, bias = fold_basis(weight[..., n_cls:], params["linear.bias"], self.basis_mean, self.basis)
        return {"linear.weight": torch.cat([weight[..., :n_cls].to(w_patch.dtype), w_patch], -1), "linear.bias": bias}

    def features(self, cls: Tensor, patch: Tensor | None) -> Tensor:
        """The classifier input (B, F)."""
        feats = concat_blocks(cls)
        if self.avgpool:
            if patch is None:
                raise ValueError("LinearHead(avgpool=True) needs patch tokens")
            feats = torch.cat([feats, patch[:, -1].mean(dim=1)], dim=1)
        return feats

    def forward(self, cls: Tensor, patch: Tensor | None = None) -> Tensor:
        if self.basis is None:
            return self.linear(self.features(cls, patch))
        folded = self.fold({"linear.weight": self.linear.weight, "linear.bias": self.linear.bias})
        return nn.functional.linear(self.features(cls, patch), folded["linear.weight"], folded["linear.bias"])

    def stacked_forward(self, params: dict[str, Tensor], cls: Tensor, patch: Tensor | None, training: bool) -> Tensor:
        return stacked_linear(self.features(cls, patch), params["linear.weight"], params["linear.bias"])
