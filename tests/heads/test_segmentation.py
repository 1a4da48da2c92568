"""The segmentation heads: the DINOv2 linear protocol's layout, the stacked forward equal to the plain one, a
projected store's coordinates read through the basis, and overfitting a tiny planted mask."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from heads.batched import HeadStack
from heads.segmentation import (
    DecoderSegmentationHead,
    LinearSegmentationHead,
    patch_grid,
    segmentation_loss,
    upsample_logits,
)

HEADS = [LinearSegmentationHead, DecoderSegmentationHead]


def _head(head_cls, **kw):
    extra = {"width": 16} if head_cls is DecoderSegmentationHead else {}
    return head_cls(dim=kw.pop("dim", 6), n_layers=4, n_outputs=kw.pop("n_outputs", 2), **extra, **kw)


def test_patch_grid_concatenates_blocks_per_patch_row_major():
    patch = torch.arange(2 * 4 * 6 * 3, dtype=torch.float32).reshape(2, 4, 6, 3)  # B, L, P = 2x3, D
    grid = patch_grid(patch, grid=(2, 3))
    assert grid.shape == (2, 12, 2, 3)
    # channel l*D + d at (row, col) is block l's feature d of patch row*3 + col
    assert torch.equal(grid[1, 2 * 3 + 1, 1, 2], patch[1, 2, 5, 1])
    with pytest.raises(ValueError, match="grid"):
        patch_grid(torch.zeros(1, 4, 6, 3))


@pytest.mark.parametrize(("head_cls", "side"), [(LinearSegmentationHead, 4), (DecoderSegmentationHead, 16)])
def test_output_on_the_heads_grid_and_upsampled(head_cls, side):
    logits = _head(head_cls, dim=8, n_outputs=3)(None, torch.randn(2, 4, 16, 8))
    assert logits.shape == (2, 3, side, side)
    assert upsample_logits(logits[None], (40, 40)).shape == (1, 2, 3, 40, 40)


def test_linear_head_is_batchnorm_then_a_1x1_conv():
    head = _head(LinearSegmentationHead, dim=5)
    patch = torch.randn(3, 4, 9, 5)
    x = patch_grid(patch)  # training mode: the batch's statistics per channel, no affine
    x = (x - x.mean((0, 2, 3), keepdim=True)) / torch.sqrt(x.var((0, 2, 3), unbiased=False, keepdim=True) + 1e-5)
    expected = torch.einsum("bchw,kc->bkhw", x, head.classifier.weight[:, :, 0, 0])
    torch.testing.assert_close(head(None, patch), expected + head.classifier.bias[None, :, None, None])


@pytest.mark.parametrize("head_cls", HEADS)
def test_stacked_forward_equals_each_members_forward(head_cls):
    torch.manual_seed(0)
    stack = HeadStack(lambda: _head(head_cls), 3)
    patch = torch.randn(2, 4, 16, 6)
    stacked = stack(None, patch)
    for k, member in enumerate(stack.members):
        torch.testing.assert_close(stacked[k], member(None, patch), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("head_cls", HEADS)
def test_projected_coordinates_read_through_the_basis(head_cls):
    torch.manual_seed(1)
    mean, basis = torch.randn(4 * 6), torch.randn(4 * 6, 5)
    z = torch.randn(2, 1, 16, 5)
    full = (mean + z[:, 0] @ basis.T).reshape(2, 16, 4, 6).permute(0, 2, 1, 3)
    plain = _head(head_cls)
    projected = _head(head_cls, projection=(mean, basis))
    projected.load_state_dict(plain.state_dict())
    torch.testing.assert_close(projected(None, z), plain(None, full), atol=1e-5, rtol=1e-4)


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


@pytest.mark.parametrize("head_cls", HEADS)
def test_overfits_a_tiny_planted_mask(head_cls, one_thread):
    patch, masks = _planted()
    head = _head(head_cls)
    optimiser = torch.optim.Adam(head.parameters(), lr=0.03)
    for _ in range(80):
        optimiser.zero_grad()
        loss = segmentation_loss(upsample_logits(head(None, patch), (16, 16)), masks)
        loss.backward()
        optimiser.step()
    head.eval()
    pred = upsample_logits(head(None, patch), (16, 16)) > 0
    inter = (pred & (masks > 0.5)).sum(dim=(2, 3)).float()
    dice = 2 * inter / (pred.sum(dim=(2, 3)) + (masks > 0.5).sum(dim=(2, 3))).float()
    assert dice.mean() > 0.9, dice
