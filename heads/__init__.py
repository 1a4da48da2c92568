"""Trainable heads on cached backbone features: linear probe, GLoRI, MLP, segmentation (pure torch; no I/O).

Heads declare themselves in `heads.registry` (options with defaults, patch tokens, attention maps), which
imports no torch; the rest of this package loads on first use (so the CLI can read the declarations cheaply).
`build_head(name, dim=..., n_layers=..., n_outputs=..., **options)` is the one entry point; `HEADS` maps
names to classes. Every head takes cls (B, L, D) and patch (B, L, P, D) (or None when `needs_patch` is
False) and returns logits (B, K); the segmentation heads (heads/segmentation.py) return (B, K, h, w).
`HeadStack` runs one head per learning rate in one batched pass.
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any

from heads.registry import HeadOption, HeadOptionError, HeadSpec, head_names, head_spec, head_specs

if TYPE_CHECKING:
    from heads.base import Head
    from heads.batched import HeadStack, masked_bce
    from heads.glori import GloriHead
    from heads.linear import LinearHead
    from heads.mlp import MlpHead

_LAZY = {
    "Head": "heads.base",
    "HeadStack": "heads.batched",
    "masked_bce": "heads.batched",
    "GloriHead": "heads.glori",
    "LinearHead": "heads.linear",
    "MlpHead": "heads.mlp",
}

__all__ = [
    "HEADS",
    "GloriHead",
    "Head",
    "HeadOption",
    "HeadOptionError",
    "HeadSpec",
    "HeadStack",
    "LinearHead",
    "MlpHead",
    "build_head",
    "head_names",
    "head_spec",
    "head_specs",
    "masked_bce",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "HEADS":
        return {spec.name: spec.load() for spec in head_specs()}
    raise AttributeError(f"module 'heads' has no attribute {name!r}")


def build_head(
    name: str,
    *,
    dim: int,
    n_layers: int,
    n_outputs: int,
    projection: tuple[Any, Any] | None = None,
    grid: tuple[int, int] | None = None,
    **options: Any,
) -> Head:
    """A head by registry name; `options` are checked and completed by its spec (e.g. avgpool=True).

    `projection` is a projected store's (mean (F,), basis (F, R)) when the store holds patch tokens projected
    (rank R), and `grid` the stored patch grid (h, w); both are properties of the features, not options, and reach
    only heads whose class takes them (the segmentation heads lay the tokens out on the grid)."""
    spec = head_spec(name)
    cls = spec.load()
    takes = inspect.signature(cls).parameters
    extra = {k: v for k, v in (("projection", projection), ("grid", grid)) if v is not None and k in takes}
    return cls(dim=dim, n_layers=n_layers, n_outputs=n_outputs, **spec.resolve(options), **extra)
