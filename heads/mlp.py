"""MLP head (CXRBase-style): a two-layer MLP on the concatenated CLS tokens, trained with label smoothing.

Input: CLS of the last L blocks side by side (L·D); LayerNorm -> Linear(L·D, hidden) -> GELU -> Dropout ->
Linear(hidden, K). The loss smooths the binary targets: y' = y·(1 - s) + s/2 (`label_smoothing` = s).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from heads.base import Head, concat_blocks, per_head_linear, stacked_linear


class MlpHead(Head):
    """logits (B, K) = fc2(dropout(gelu(fc1(norm(cls_1 .. cls_L)))))."""

    name = "mlp"
    needs_patch = False

    def __init__(
        self,
        dim: int,
        n_layers: int,
        n_outputs: int,
        hidden: int = 512,
        dropout: float = 0.1,
        label_smoothing: float = 0.1,
    ) -> None:
        super().__init__(
            dim=dim, n_layers=n_layers, n_outputs=n_outputs, hidden=hidden, dropout=dropout,
            label_smoothing=label_smoothing,
        )  # fmt: skip
        self.label_smoothing = label_smoothing
        self.dropout = dropout
        in_features = dim * n_layers
        self.norm = nn.LayerNorm(in_features)
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, n_outputs)

    def forward(self, cls: Tensor, patch: Tensor | None = None) -> Tensor:
        hidden = nn.functional.gelu(self.fc1(self.norm(concat_blocks(cls))))
        return self.fc2(nn.functional.dropout(hidden, self.dropout, self.training))

    def stacked_forward(self, params: dict[str, Tensor], cls: Tensor, patch: Tensor | None, training: bool) -> Tensor:
        # The LayerNorm's affine part differs per head, so fold it into fc1: W·(g⊙n + b) = (W⊙g)·n + W·b.
        normed = nn.functional.layer_norm(concat_blocks(cls), (cls.shape[1] * cls.shape[2],), eps=self.norm.eps)
        gain, shift = params["norm.weight"], params["norm.bias"]
        w1 = params["fc1.weight"] * gain[:, None, :]
        b1 = params["fc1.bias"] + torch.einsum("hof,hf->ho", params["fc1.weight"], shift)
        hidden = nn.functional.gelu(stacked_linear(normed, w1, b1))
        hidden = nn.functional.dropout(hidden, self.dropout, training)
        return per_head_linear(hidden, params["fc2.weight"], params["fc2.bias"])
