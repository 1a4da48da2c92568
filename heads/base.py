"""What every head shares: the input layout, the stacked (one-pass, many-heads) forward, the config record.

Input layout (the feature store's, docs/architecture.md "Contracts"):
    cls   (B, L, D)     class token of each of the last L blocks (L = 4 for CheXFound)
    patch (B, L, P, D)  patch tokens of the same blocks, or None for heads with `needs_patch = False`
Output: logits (B, K), one per output (finding / binary label / survival horizon).

A head is an ordinary `nn.Module` whose `forward` is the plain PyTorch reference computation. For the lr sweep,
`stacked_forward(params, cls, patch)` runs H copies of the head at once: every entry of `params` carries a
leading H dimension (the members' parameters stacked by `heads.batched.HeadStack`), one feature batch feeds all
H heads and the result is (H, B, K). Tests check that the two paths agree.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class Head(nn.Module):
    """Base class: subclasses set `name`, `needs_patch`, `label_smoothing` and implement both forwards."""

    name: str = "head"
    needs_patch: bool = False
    label_smoothing: float = 0.0

    def __init__(self, **config: Any) -> None:
        super().__init__()
        self.config: dict[str, Any] = {"name": self.name, **config}

    def forward(self, cls: Tensor, patch: Tensor | None = None) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def stacked_forward(
        self, params: dict[str, Tensor], cls: Tensor, patch: Tensor | None, training: bool
    ) -> Tensor:  # pragma: no cover - abstract
        """Logits (H, B, K) of H heads whose parameters are `params` (each (H, ...), folded by `fold` first);
        dropout iff `training`."""
        raise NotImplementedError

    def fold(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """The entries of `params` (stacked, (H, ...)) that a projected store's basis replaces, folded; {} for a
        head without a basis (the default)."""
        return {}

    @property
    def has_basis(self) -> bool:
        """Whether the head reads a projected store through a basis (and so has weights to fold)."""
        return getattr(self, "basis", None) is not None

    def keep_basis(self, projection: tuple[Any, Any] | None) -> bool:
        """Keep a projected store's (mean (F,), basis (F, R)) as buffers `basis_mean`, `basis` (not saved with the
        weights: the store holds them); False when there is none."""
        if projection is None:
            self.basis_mean = self.basis = None
            return False
        mean, basis = (torch.as_tensor(a) for a in projection)
        if mean.dim() != 1 or basis.dim() != 2 or basis.shape[0] != mean.shape[0]:
            raise ValueError(f"a projection is a mean (F,) and a basis (F, R); got {tuple(mean.shape)}, "
                             f"{tuple(basis.shape)}")  # fmt: skip
        self.register_buffer("basis_mean", mean, persistent=False)
        self.register_buffer("basis", basis, persistent=False)
        return True


def fold_basis(weight: Tensor, bias: Tensor, mean: Tensor, basis: Tensor) -> tuple[Tensor, Tensor]:
    """A Linear (weight (..., O, F), bias (..., O)) on reconstructed tokens mean + basis z, as a Linear on z:
    (weight @ basis (..., O, R), bias + weight @ mean). Computed in float32 even under autocast."""
    dtype = torch.promote_types(weight.dtype, torch.float32)
    with torch.autocast(weight.device.type, enabled=False):
        w = weight.to(dtype)
        return w @ basis.to(dtype), bias.to(dtype) + w @ mean.to(dtype)


def concat_blocks(cls: Tensor) -> Tensor:
    """(B, L, D) -> (B, L·D): the class tokens of the L blocks side by side (DINOv2's linear-eval input)."""
    return cls.reshape(cls.shape[0], -1)


def concat_patch_blocks(patch: Tensor) -> Tensor:
    """(B, L, P, D) -> (B, P, L·D): each patch's tokens of the L blocks side by side (GLoRI's input)."""
    b, n_layers, p, d = patch.shape
    return patch.permute(0, 2, 1, 3).reshape(b, p, n_layers * d)


def stacked_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """H linear maps of one shared input in one GEMM: x (B, F), weight (H, O, F) -> (H, B, O)."""
    h, o, f = weight.shape
    out = (x @ weight.reshape(h * o, f).T).reshape(x.shape[0], h, o).transpose(0, 1)
    return out if bias is None else out + bias[:, None, :]


def per_head_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """H linear maps of H inputs: x (H, ..., F), weight (H, O, F) -> (H, ..., O)."""
    shape = x.shape
    out = torch.bmm(x.reshape(shape[0], -1, shape[-1]), weight.transpose(1, 2))
    if bias is not None:
        out = out + bias[:, None, :]
    return out.reshape(*shape[:-1], weight.shape[1])


def per_head_layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """LayerNorm over the last dim with per-head affine parameters: x (H, ..., E), weight/bias (H, E)."""
    shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
    normed = torch.nn.functional.layer_norm(x, x.shape[-1:], eps=eps)
    return normed * weight.reshape(shape) + bias.reshape(shape)
