"""int8 tokens with a per-token scale: x ≈ q * scale, scale = max|x| / 127 over the token's features."""

from __future__ import annotations

import numpy as np
import torch


def quantize_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int8 same shape as x, scale float32 of shape x.shape[:-1])."""
    x = x.float()
    scale = x.abs().amax(dim=-1) / 127.0
    q = torch.round(x / torch.where(scale == 0, 1.0, scale).unsqueeze(-1)).clamp_(-127, 127).to(torch.int8)
    return q, scale


def dequantize(q: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    """float32 tokens from stored values (int8 + scale, or float16 when scale is None)."""
    if scale is None:
        return q.astype(np.float32, copy=False)
    return q.astype(np.float32) * scale[..., None].astype(np.float32)
