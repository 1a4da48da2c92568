"""Mask readers on small files written in each source's real format."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.errors import ManifestError
from pipeline.masks import (
    chexmask_masks,
    decode_rle,
    encode_rle,
    index_montgomery,
    index_scr,
    index_shenzhen,
    read_chexmask,
    read_indexed,
)


def test_rle_is_row_major_with_one_based_starts():
    # CheXmask's convention: flatten row-major, "start length" pairs, starts counted from 1.
    mask = decode_rle("2 3 9 2", height=3, width=4)
    expected = np.zeros(12, dtype=bool)
    expected[1:4] = True  # pixels 2..4 (1-based): row 0, columns 1-3
    expected[8:10] = True  # pixels 9..10: row 2, columns 0-1
    assert np.array_equal(mask, expected.reshape(3, 4))
    assert mask[0, 1] and mask[2, 0] and not mask[1, 0]  # column-major would set mask[1, 0]
    assert not decode_rle("", 3, 4).any() and not decode_rle(float("nan"), 3, 4).any()


def test_rle_round_trip_and_bad_strings():
    rng = np.random.default_rng(0)
    for _ in range(5):
        mask = rng.random((17, 23)) < 0.3
        assert np.array_equal(decode_rle(encode_rle(mask), 17, 23), mask)
    with pytest.raises(ValueError, match="odd"):
        decode_rle("1 2 3", 3, 4)
    with pytest.raises(ValueError, match="outside"):
        decode_rle("10 5", 3, 4)


def test_read_chexmask_filters_on_dice_rca_and_decodes(tmp_path):
    rng = np.random.default_rng(1)
    masks = [{name: rng.random((6, 8)) < 0.4 for name in ("Right Lung", "Left Lung", "Heart")} for _ in range(3)]
    frame = pd.DataFrame(
        {
            "dicom_id": ["a1", "b2", "c3"],
            "Dice RCA (Max)": [0.9, 0.8, 0.95],
            "Dice RCA (Mean)": [0.85, 0.65, 0.7],
            "Landmarks": ["[]"] * 3,
            **{name: [encode_rle(m[name]) for m in masks] for name in ("Left Lung", "Right Lung", "Heart")},
            "Height": [6] * 3,
            "Width": [8] * 3,
        }
    )
    path = tmp_path / "MIMIC-CXR-JPG.csv"
    frame.to_csv(path, index=False)
    kept = read_chexmask(path)
    assert list(kept["image_id"]) == ["a1", "c3"]  # b2's Dice RCA (Mean) 0.65 < 0.7; 0.7 is kept
    decoded = chexmask_masks(kept.iloc[1])
    assert np.array_equal(decoded["right_lung"], masks[2]["Right Lung"])
    assert np.array_equal(decoded["left_lung"], masks[2]["Left Lung"]) and np.array_equal(
        decoded["heart"], masks[2]["Heart"]
    )
    assert len(read_chexmask(path, min_dice=None)) == 3
    frame.drop(columns="Height").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ManifestError, match="Height"):
        read_chexmask(tmp_path / "bad.csv")


def _save(path, mask, mode="L", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray((mask * 255).astype(np.uint8))
    if mode == "P":
        image = image.convert("P")
    image.save(path, format=fmt)


def test_jsrt_scr_gif_masks(tmp_path):
    rng = np.random.default_rng(2)
    truth = {
        s: rng.random((16, 16)) < 0.3 for s in ("right lung", "left lung", "heart", "left clavicle", "right clavicle")
    }
    for structure, mask in truth.items():
        _save(tmp_path / "scratch" / "fold1" / "masks" / structure / "JPCLN001.gif", mask, mode="P", fmt="GIF")
    _save(tmp_path / "scratch" / "fold1" / "masks" / "heart" / "JPCNN002.gif", truth["heart"], mode="P", fmt="GIF")
    index = index_scr(tmp_path)
    assert set(index) == {"JPCLN001", "JPCNN002"}
    masks = read_indexed(index, "JPCLN001")
    assert set(masks) == {"right_lung", "left_lung", "heart", "left_clavicle", "right_clavicle"}
    for structure, mask in truth.items():
        assert np.array_equal(masks[structure.replace(" ", "_")], mask)
    with pytest.raises(ManifestError, match="JPCLN999"):
        read_indexed(index, "JPCLN999")


def test_montgomery_left_right_masks(tmp_path):
    left, right = np.zeros((10, 12), bool), np.zeros((10, 12), bool)
    left[2:8, 7:11], right[2:8, 1:5] = True, True  # the patient's left lung is on the image right
    _save(tmp_path / "MontgomerySet" / "ManualMask" / "leftMask" / "MCUCXR_0001_0.png", left)
    _save(tmp_path / "MontgomerySet" / "ManualMask" / "rightMask" / "MCUCXR_0001_0.png", right)
    masks = read_indexed(index_montgomery(tmp_path), "MCUCXR_0001_0")
    assert np.array_equal(masks["left_lung"], left) and np.array_equal(masks["right_lung"], right)
    with pytest.raises(ManifestError, match="no mask files"):
        index_montgomery(tmp_path / "MontgomerySet" / "CXR_png")


def test_shenzhen_lung_masks(tmp_path):
    lungs = np.zeros((8, 8), bool)
    lungs[1:7, 1:3] = lungs[1:7, 5:7] = True
    _save(tmp_path / "mask" / "CHNCXR_0001_0_mask.png", lungs)
    _save(tmp_path / "mask" / "CHNCXR_0002_1_mask.png", ~lungs)
    (tmp_path / "mask" / "notes.png").write_bytes(b"")  # not a mask name: ignored
    index = index_shenzhen(tmp_path)
    assert set(index) == {"CHNCXR_0001_0", "CHNCXR_0002_1"}
    assert np.array_equal(read_indexed(index, "CHNCXR_0002_1")["lungs"], ~lungs)
