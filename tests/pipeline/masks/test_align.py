"""Masks aligned with the model's input: the map back agrees with the eval view's own pixels, and a mask taken
to the input square and back keeps its outline, for every resize policy and non-square images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.embed.preprocess import Preprocessing
from pipeline.masks.align import input_map, to_input

POLICIES = [("short_side+center_crop", None), ("short_side+center_crop", 80), ("pad_square+resize", None),
            ("resize", None)]  # fmt: skip
SHAPES = [(100, 150), (150, 100), (97, 97)]


def _pre(resize: str, resize_to: int | None) -> Preprocessing:
    return Preprocessing(image_size=64, mean=(0.0,) * 3, std=(1.0,) * 3, resize=resize, resize_to=resize_to)


@pytest.mark.parametrize(("resize", "resize_to"), POLICIES)
@pytest.mark.parametrize(("height", "width"), SHAPES)
def test_map_places_the_input_where_the_eval_view_took_its_pixels(resize, resize_to, height, width):
    """A ramp image (value = the pixel's row / column centre) through the eval view reads back, at each input
    pixel, the image coordinate the map says that input pixel came from."""
    pre = _pre(resize, resize_to)
    imap = input_map(pre, height, width)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    seen_row = pre.eval_view(torch.from_numpy(rows)[None])[0, :, 32].numpy()
    seen_col = pre.eval_view(torch.from_numpy(cols)[None])[0, 32, :].numpy()
    u = np.arange(64) + 0.5
    expect_row = (u + imap.offset[0]) / imap.scale[0]
    expect_col = (u + imap.offset[1]) / imap.scale[1]
    inner_r = (expect_row > 2) & (expect_row < height - 2)  # away from padding and the image's border
    inner_c = (expect_col > 2) & (expect_col < width - 2)
    assert np.abs(seen_row[inner_r] - expect_row[inner_r]).max() < 0.15
    assert np.abs(seen_col[inner_c] - expect_col[inner_c]).max() < 0.15


@pytest.mark.parametrize(("resize", "resize_to"), POLICIES)
@pytest.mark.parametrize(("height", "width"), SHAPES)
def test_round_trip_keeps_the_mask_within_the_covered_pixels(resize, resize_to, height, width):
    pre = _pre(resize, resize_to)
    rr, cc = np.mgrid[0:height, 0:width]
    masks = np.stack([(rr - height / 2) ** 2 / (height / 3) ** 2 + (cc - width / 2) ** 2 / (width / 3) ** 2 < 1,
                      (rr > height // 4) & (cc < width // 2)])  # fmt: skip
    imap = input_map(pre, height, width)
    rows, cols = imap.covered()
    back = (imap.sample(to_input(masks, pre, 32)) >= 0.5).numpy()
    true = masks[:, rows, cols]
    assert back.shape == true.shape
    dice = 2 * (back & true).sum(axis=(1, 2)) / (back.sum(axis=(1, 2)) + true.sum(axis=(1, 2)))
    assert dice.min() > 0.98, dice


def test_covered_pixels_of_each_policy():
    crop = input_map(_pre("short_side+center_crop", None), 100, 150)  # 64 x 96, a centred 64 square: cols 25-124
    assert crop.covered() == (slice(0, 100), slice(25, 125))
    zoom = input_map(_pre("short_side+center_crop", 80), 100, 100)  # 80 x 80 then 64: the middle 80 of 100
    assert zoom.covered() == (slice(10, 90), slice(10, 90))
    pad = input_map(_pre("pad_square+resize", None), 100, 150)  # padded on black: every image pixel is seen
    assert pad.covered() == (slice(0, 100), slice(0, 150))


def test_targets_are_shares_in_unit_range():
    pre = _pre("short_side+center_crop", None)
    masks = np.zeros((1, 128, 128), dtype=bool)
    masks[0, :, :64] = True
    target = to_input(masks, pre, 16)
    assert target.shape == (1, 16, 16) and float(target.min()) >= 0 and float(target.max()) <= 1
    assert torch.allclose(target[0, :, :7], torch.ones(16, 7)) and torch.allclose(target[0, :, 9:], torch.zeros(16, 7))
