"""Segmentation heads on the cached patch tokens (issue 24; not yet wired into the probe: the task-kind seam
will, docs/architecture.md "Segmentation building blocks").

Input: patch (B, L, P, D), the store's patch tokens of the last L blocks on a square h x w = P grid (a pooled
store's coarser grid works the same, at a coarser resolution). Output: logits (B, K, H, W) at the mask's size,
one channel per structure (multi-label: structures may overlap, e.g. CheXmask's heart and lungs).

- `LinearSegmentationHead`: DINOv2's frozen-feature linear protocol ("linear4"/BNHead): the L blocks' tokens
  concatenated per patch (B, L*D, h, w), BatchNorm, a 1x1 convolution to K channels, bilinear upsampling.
- `DecoderSegmentationHead`: a small decoder: 3x3 conv, BatchNorm, ReLU, two x2 bilinear upsamplings with a 3x3
  conv each, a 1x1 conv to K, then bilinear to the mask size.
`segmentation_loss`: per-structure BCE plus soft Dice.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def patch_grid(patch: Tensor, grid: tuple[int, int] | None = None) -> Tensor:
    """(B, L, P, D) patch tokens -> (B, L*D, h, w) feature map (blocks concatenated per patch, row-major grid)."""
    if patch.dim() != 4:
        raise ValueError(f"expected patch tokens (B, L, P, D), got shape {tuple(patch.shape)}")
    b, n_layers, p, d = patch.shape
    h, w = grid if grid is not None else (math.isqrt(p), math.isqrt(p))
    if h * w != p:
        raise ValueError(f"{p} patch tokens do not fill a {h}x{w} grid; pass grid=(h, w)")
    return patch.permute(0, 1, 3, 2).reshape(b, n_layers * d, h, w)


class LinearSegmentationHead(nn.Module):
    """DINOv2's linear segmentation protocol: BatchNorm + 1x1 conv over the concatenated last-L patch tokens."""

    def __init__(self, embed_dim: int, n_structures: int, n_layers: int = 4) -> None:
        super().__init__()
        channels = embed_dim * n_layers
        self.norm = nn.BatchNorm2d(channels)
        self.classifier = nn.Conv2d(channels, n_structures, kernel_size=1)
        self.config = {"name": "seg_linear", "embed_dim": embed_dim, "n_structures": n_structures, "n_layers": n_layers}

    def forward(self, patch: Tensor, size: tuple[int, int], grid: tuple[int, int] | None = None) -> Tensor:
        logits = self.classifier(self.norm(patch_grid(patch, grid)))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class DecoderSegmentationHead(nn.Module):
    """A small convolutional decoder: the patch grid upsampled x4 through two conv stages, then to the mask size."""

    def __init__(self, embed_dim: int, n_structures: int, n_layers: int = 4, width: int = 64) -> None:
        super().__init__()
        channels = embed_dim * n_layers

        def stage(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())

        self.stem = stage(channels, width)
        self.up1 = stage(width, width // 2)
        self.up2 = stage(width // 2, width // 4)
        self.classifier = nn.Conv2d(width // 4, n_structures, kernel_size=1)
        self.config = {
            "name": "seg_decoder", "embed_dim": embed_dim, "n_structures": n_structures, "n_layers": n_layers,
            "width": width,
        }  # fmt: skip

    def forward(self, patch: Tensor, size: tuple[int, int], grid: tuple[int, int] | None = None) -> Tensor:
        x = self.stem(patch_grid(patch, grid))
        x = self.up1(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        x = self.up2(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        return F.interpolate(self.classifier(x), size=size, mode="bilinear", align_corners=False)


def segmentation_loss(logits: Tensor, masks: Tensor, dice_weight: float = 1.0, eps: float = 1.0) -> Tensor:
    """Mean per-structure BCE + `dice_weight` x (1 - soft Dice); logits and masks (B, K, H, W), masks 0/1."""
    masks = masks.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, masks)
    probs = torch.sigmoid(logits)
    inter = (probs * masks).sum(dim=(2, 3))
    total = probs.sum(dim=(2, 3)) + masks.sum(dim=(2, 3))
    dice = (2 * inter + eps) / (total + eps)
    return bce + dice_weight * (1.0 - dice.mean())


SEGMENTATION_HEADS = {"seg_linear": LinearSegmentationHead, "seg_decoder": DecoderSegmentationHead}
