"""The tokens chex caches: each of the last n blocks' outputs passed through the final norm.

This is how DINOv2/CheXFound evaluation takes them (`get_intermediate_layers(..., norm=True)`);
timm's `forward_intermediates` does the same with `norm=True`.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer


def last_layer_tokens(
    model: VisionTransformer, x: torch.Tensor, n_layers: int = 4
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(cls (B,L,D), patch (B,L,P,D), registers (B,L,R,D)) of the last `n_layers` blocks, oldest first."""
    depth = len(model.blocks)
    if not 1 <= n_layers <= depth:
        raise ValueError(f"n_layers must be in 1..{depth}, got {n_layers}")
    out = model.forward_intermediates(
        x,
        indices=n_layers,
        return_prefix_tokens=True,
        norm=True,
        stop_early=True,
        output_fmt="NLC",
        intermediates_only=True,
    )
    spatial = torch.stack([s for s, _ in out], dim=1)  # (B, L, P, D)
    prefix = torch.stack([p for _, p in out], dim=1)  # (B, L, 1+R, D)
    return prefix[:, :, 0], spatial, prefix[:, :, 1:]
