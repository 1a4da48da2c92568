"""The patch grid travels from the backbone through the store to the attention file and the overlay: non-square
grids are kept, stores written before the grid was recorded read as square, and the overlay crops the source
image as each family's resize policy saw it."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.report.attention import load_attention
from pipeline.report.source_image import crop_as_model_saw
from pipeline.runs import write_attention
from pipeline.store.layout import StoreLayout


def test_layout_records_a_non_square_grid_and_reads_old_layouts_as_square():
    layout = StoreLayout(4, 8, 12, 0, patch_grid=(3, 4))
    assert layout.grid == (3, 4) and StoreLayout.from_dict(layout.to_dict()).grid == (3, 4)
    old = {k: v for k, v in StoreLayout(4, 8, 16, 0).to_dict().items()}
    assert "patch_grid" not in old and StoreLayout.from_dict(old).grid == (4, 4)
    with pytest.raises(ValueError, match="does not hold"):
        StoreLayout(4, 8, 12, 0, patch_grid=(3, 3))


def test_attention_file_keeps_the_store_grid(tmp_path):
    maps = np.random.default_rng(0).random((2, 3, 12)).astype(np.float32)
    write_attention(tmp_path / "attention.npz", ["a", "b"], ["x", "y", "z"], maps, np.zeros((2, 3)), grid=(3, 4))
    loaded = load_attention(tmp_path)
    assert loaded.maps.shape == (2, 3, 3, 4)
    np.testing.assert_array_equal(loaded.maps[1, 2], maps[1, 2].reshape(3, 4))


def test_overlay_crops_as_each_resize_policy_saw_the_image():
    pixels = np.arange(40 * 60, dtype=np.float32).reshape(40, 60)
    centre, ok = crop_as_model_saw(pixels, {"image_size": 32, "resize": "short_side+center_crop"})
    assert ok and centre.shape == (40, 40) and centre[0, 0] == pixels[0, 10]
    tighter, _ = crop_as_model_saw(pixels, {"image_size": 32, "resize": "short_side+center_crop", "resize_to": 40})
    assert tighter.shape == (32, 32) and tighter[0, 0] == pixels[4, 14]
    padded, ok = crop_as_model_saw(pixels, {"image_size": 32, "resize": "pad_square+resize"})
    assert ok and padded.shape == (60, 60) and padded[:10].max() == 0 and padded[10, 0] == pixels[0, 0]
