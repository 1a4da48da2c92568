"""Segmentation heads on the cached patch tokens (issue 24).

Input: patch (B, L, P, D), the store's patch tokens of the last L blocks on a square h x w = P grid (a pooled
store's coarser grid works the same, at a coarser resolution; a projected store's (B, 1, P, R) coordinates are
mapped back to the L blocks' tokens through the basis first, x = mean + U S z). Output: logits (B, K, h', w') on
the head's own grid, one channel per structure (multi-label: structures may overlap, e.g. CheXmask's heart and
lungs); the segmentation task upsamples them bilinearly to its targets' size (DINOv2's protocol: logits, not
features, are upsampled).

- `LinearSegmentationHead` ("seg_linear"): DINOv2's frozen-feature linear protocol ("linear4"/BNHead): the L
  blocks' tokens concatenated per patch (L*D channels), BatchNorm, a 1x1 convolution to K channels.
- `DecoderSegmentationHead` ("seg_decoder"): a small decoder on the same BatchNorm'd map: 3x3 conv, GroupNorm,
  ReLU, then two x2 bilinear upsamplings each followed by a 3x3 conv stage, and a 1x1 conv to K: logits at 4h x 4w.
The input BatchNorm has no affine (the conv after it absorbs one) and normalises the frozen tokens, which do not
depend on the head's parameters: its batch statistics, and so its running statistics, are the same for every
member of a sweep's stack (heads/batched.py), which keeps them in its first member (the refit's only member,
whose state is the saved head). Inside the decoder the statistics would depend on each member's weights, hence
GroupNorm there (no running statistics).
Both have a plain `forward` (the reference) and a `stacked_forward` (H heads in one pass: grouped convolutions),
tested equal. `segmentation_loss`: per-structure BCE plus soft Dice.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from heads.base import Head

# GroupNorm groups (Wu & He 2018's 32; fewer where a stage has fewer channels): 8 gave the demo's heart Dice 0.86,
# 32 0.90 (10 epochs, JSRT's pretrained store)
GROUPS = 32
NORM_EPS = 1e-5


def patch_grid(patch: Tensor, grid: tuple[int, int] | None = None) -> Tensor:
    """(B, L, P, D) patch tokens -> (B, L*D, h, w) feature map (blocks concatenated per patch, row-major grid)."""
    if patch.dim() != 4:
        raise ValueError(f"expected patch tokens (B, L, P, D), got shape {tuple(patch.shape)}")
    b, n_layers, p, d = patch.shape
    h, w = grid if grid is not None else (math.isqrt(p), math.isqrt(p))
    if h * w != p:
        raise ValueError(f"{p} patch tokens do not fill a {h}x{w} grid; pass grid=(h, w)")
    return patch.permute(0, 1, 3, 2).reshape(b, n_layers * d, h, w)


class _SegmentationHead(Head):
    """What both heads share: the token map (basis applied, normalised per patch)."""

    needs_patch = True

    def _features(self, patch: Tensor | None) -> Tensor:
        """(B, C, h, w): the concatenated tokens, batch-normalised per channel (no affine)."""
        if patch is None:
            raise ValueError(f"{self.name} needs patch tokens")
        if self.basis is not None:  # projected store: back to the L blocks' tokens, x = mean + U S z
            b, _, p, r = patch.shape
            x = self.basis_mean + patch.reshape(b * p, r) @ self.basis.T
            patch = x.reshape(b, p, self.n_layers, -1).permute(0, 2, 1, 3)
        x = patch_grid(patch, self.grid)
        return self.input_norm(x)


class LinearSegmentationHead(_SegmentationHead):
    """DINOv2's linear segmentation protocol: normalised concatenated last-L patch tokens, a 1x1 conv."""

    name = "seg_linear"

    def __init__(
        self,
        dim: int,
        n_layers: int,
        n_outputs: int,
        projection: tuple[Any, Any] | None = None,
        grid: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(dim=dim, n_layers=n_layers, n_outputs=n_outputs)
        self.n_layers, self.grid = n_layers, grid
        self.input_norm = nn.BatchNorm2d(dim * n_layers, affine=False)
        self.classifier = nn.Conv2d(dim * n_layers, n_outputs, kernel_size=1)
        self.keep_basis(projection)

    def forward(self, cls: Tensor | None, patch: Tensor | None = None) -> Tensor:
        return self.classifier(self._features(patch))

    def stacked_forward(self, params: dict[str, Tensor], cls: Tensor | None, patch: Tensor | None, training: bool):
        x = self._features(patch)  # (B, C, h, w)
        weight = params["classifier.weight"].flatten(2)  # (H, K, C)
        logits = torch.einsum("bcyx,hkc->hbkyx", x, weight)
        return logits + params["classifier.bias"][:, None, :, None, None]


class DecoderSegmentationHead(_SegmentationHead):
    """A small convolutional decoder: the patch grid upsampled x4 through two conv stages."""

    name = "seg_decoder"

    def __init__(
        self,
        dim: int,
        n_layers: int,
        n_outputs: int,
        width: int = 32,
        projection: tuple[Any, Any] | None = None,
        grid: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(dim=dim, n_layers=n_layers, n_outputs=n_outputs, width=width)
        if width < 4 or width % 4:
            raise ValueError(f"decoder width {width}: must be a positive multiple of 4")
        self.n_layers, self.grid = n_layers, grid
        widths = (width, width // 2, width // 4)
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
            for c_in, c_out in zip((dim * n_layers, *widths[:-1]), widths, strict=True)
        )
        self.norms = nn.ModuleList(nn.GroupNorm(_groups(c), c, eps=NORM_EPS) for c in widths)
        self.classifier = nn.Conv2d(widths[-1], n_outputs, kernel_size=1)
        self.input_norm = nn.BatchNorm2d(dim * n_layers, affine=False)
        self.keep_basis(projection)

    def forward(self, cls: Tensor | None, patch: Tensor | None = None) -> Tensor:
        x = self._features(patch)
        for k, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            if k:
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = torch.relu(norm(conv(x)))
        return self.classifier(x)

    def stacked_forward(self, params: dict[str, Tensor], cls: Tensor | None, patch: Tensor | None, training: bool):
        x = self._features(patch)  # (B, C, h, w), shared by every member
        n_heads = params["classifier.weight"].shape[0]
        b = x.shape[0]
        for k in range(len(self.convs)):
            weight = params[f"convs.{k}.weight"]  # (H, C_out, C_in, 3, 3)
            if k:
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
                x = F.conv2d(x, weight.flatten(0, 1), padding=1, groups=n_heads)
            else:
                x = F.conv2d(x, weight.flatten(0, 1), padding=1)
            c = weight.shape[1]
            y = F.group_norm(x.reshape(b * n_heads, c, *x.shape[-2:]), _groups(c), eps=NORM_EPS)
            y = y.reshape(b, n_heads, c, *x.shape[-2:])
            scale, shift = params[f"norms.{k}.weight"], params[f"norms.{k}.bias"]
            y = y * scale[None, :, :, None, None] + shift[None, :, :, None, None]
            x = torch.relu(y).reshape(b, n_heads * c, *x.shape[-2:])
        weight = params["classifier.weight"]  # (H, K, C, 1, 1)
        out = F.conv2d(x, weight.flatten(0, 1), params["classifier.bias"].flatten(), groups=n_heads)
        return out.reshape(b, n_heads, -1, *out.shape[-2:]).transpose(0, 1)


def _groups(channels: int) -> int:
    return math.gcd(GROUPS, channels)


def upsample_logits(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """(..., K, h, w) logits -> (..., K, *size), bilinear (DINOv2's protocol upsamples logits, not features)."""
    lead = logits.shape[:-3]
    flat = logits.reshape(-1, *logits.shape[-3:])
    if tuple(flat.shape[-2:]) != tuple(size):
        flat = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return flat.reshape(*lead, *flat.shape[-3:])


def segmentation_loss(logits: Tensor, masks: Tensor, dice_weight: float = 1.0, eps: float = 1.0) -> Tensor:
    """Mean per-structure BCE + `dice_weight` x (1 - soft Dice); logits and masks (B, K, H, W), masks in [0, 1]."""
    masks = masks.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, masks)
    probs = torch.sigmoid(logits)
    inter = (probs * masks).sum(dim=(-2, -1))
    total = probs.sum(dim=(-2, -1)) + masks.sum(dim=(-2, -1))
    dice = (2 * inter + eps) / (total + eps)
    return bce + dice_weight * (1.0 - dice.mean())


SEGMENTATION_HEADS = {"seg_linear": LinearSegmentationHead, "seg_decoder": DecoderSegmentationHead}
