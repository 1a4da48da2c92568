"""Trainable heads on cached backbone features: linear probe, GLoRI, MLP (pure torch; no I/O).

`build_head(name, dim=..., n_layers=..., n_outputs=..., **options)` is the one entry point; `HEADS` maps
names to classes. Every head takes cls (B, L, D) and patch (B, L, P, D) (or None when `needs_patch` is
False) and returns logits (B, K). `HeadStack` runs one head per learning rate in one batched pass.
"""

from __future__ import annotations

from typing import Any

from heads.base import Head
from heads.batched import HeadStack, masked_bce
from heads.glori import GloriHead
from heads.linear import LinearHead
from heads.mlp import MlpHead

HEADS: dict[str, type[Head]] = {"linear": LinearHead, "glori": GloriHead, "mlp": MlpHead}

__all__ = ["HEADS", "GloriHead", "Head", "HeadStack", "LinearHead", "MlpHead", "build_head", "masked_bce"]


def build_head(name: str, *, dim: int, n_layers: int, n_outputs: int, **options: Any) -> Head:
    """A head by registry name; `options` are the head class's keyword arguments (e.g. avgpool=True)."""
    if name not in HEADS:
        raise KeyError(f"unknown head {name!r}; known heads: {', '.join(sorted(HEADS))}")
    return HEADS[name](dim=dim, n_layers=n_layers, n_outputs=n_outputs, **options)
