"""The segmentation heads: shapes, the DINOv2 linear protocol's layout, and overfitting a tiny planted mask."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from heads.segmentation import DecoderSegmentationHead, LinearSegmentationHead, patch_grid, segmentation_loss


def test_patch_grid_concatenates_blocks_per_patch_row_major():
    patch = torch.arange(2 * 4 * 6 * 3, dtype=torch.float32).reshape(2, 4, 6, 3)  # B, L, P = 2x3, D
    grid = patch_grid(patch, grid=(2, 3))
    assert grid.shape == (2, 12, 2, 3)
    # channel l*D + d at (row, col) is block l's feature d of patch row*3 + col
    assert torch.equal(grid[1, 2 * 3 + 1, 1, 2], patch[1, 2, 5, 1])
    with pytest.raises(ValueError, match="grid"):
        patch_grid(torch.zeros(1, 4, 6, 3))


@pytest.mark.parametrize("head_cls", [LinearSegmentationHead, DecoderSegmentationHead])
def test_output_shape_at_mask_size(head_cls):
    head = head_cls(embed_dim=8, n_structures=3)
    logits = head(torch.randn(2, 4, 16, 8), size=(40, 40))
    assert logits.shape == (2, 3, 40, 40)


def test_linear_head_is_batchnorm_then_1x1_conv_then_bilinear():
    head = LinearSegmentationHead(embed_dim=5, n_structures=2).eval()
    patch = torch.randn(3, 4, 9, 5)
    x = head.norm(patch_grid(patch))
    conv = torch.einsum("bchw,kc->bkhw", x, head.classifier.weight[:, :, 0, 0])
    expected = F.interpolate(
        conv + head.classifier.bias[None, :, None, None], size=(12, 12), mode="bilinear", align_corners=False
    )
    torch.testing.assert_close(head(patch, size=(12, 12)), expected)


def _planted(n: int = 8, grid: int = 4, dim: int = 6, size: int = 16):
    """Patch tokens whose first feature says whether the patch is inside a planted square, and the mask."""
    torch.manual_seed(0)
    patch = torch.randn(n, 4, grid * grid, dim) * 0.3
    masks = torch.zeros(n, 2, size, size)
    for i in range(n):
        r, c = int(torch.randint(0, grid - 1, ())), int(torch.randint(0, grid - 1, ()))
        inside = torch.zeros(grid, grid)
        inside[r : r + 2, c : c + 2] = 1.0
        patch[i, :, :, 0] += 2.0 * inside.flatten()
        up = F.interpolate(inside[None, None], size=(size, size), mode="nearest")[0, 0]
        masks[i, 0], masks[i, 1] = up, 1.0 - up
    return patch, masks


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread is fastest, and a loaded machine's thread pool would make this take a minute."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("head_cls", [LinearSegmentationHead, DecoderSegmentationHead])
def test_overfits_a_tiny_planted_mask(head_cls, one_thread):
    patch, masks = _planted()
    head = head_cls(embed_dim=6, n_structures=2, **({"width": 16} if head_cls is DecoderSegmentationHead else {}))
    optimiser = torch.optim.Adam(head.parameters(), lr=0.03)
    for _ in range(80):
        optimiser.zero_grad()
        loss = segmentation_loss(head(patch, size=(16, 16)), masks)
        loss.backward()
        optimiser.step()
    head.eval()
    pred = head(patch, size=(16, 16)) > 0
    inter = (pred & (masks > 0.5)).sum(dim=(2, 3)).float()
    dice = 2 * inter / (pred.sum(dim=(2, 3)) + (masks > 0.5).sum(dim=(2, 3))).float()
    assert dice.mean() > 0.9, dice
