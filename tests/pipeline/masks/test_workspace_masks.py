"""The workspace's mask files: named bits, derived `lungs`, the synthetic cohort's bit order, safe file names."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import ManifestError
from pipeline.masks.workspace import mask_file, read_structures, stored_structures, write_image_masks
from pipeline.synth.masks import encode_masks, write_mask


def test_written_masks_read_back_by_name_with_lungs_derived(tmp_path):
    rng = np.random.default_rng(0)
    masks = {name: rng.random((9, 7)) < 0.4 for name in ("heart", "right_lung", "left_lung")}
    write_image_masks(tmp_path, "scr", "JPCLN001", masks)
    assert stored_structures(tmp_path, "scr") == ("heart", "right_lung", "left_lung")
    got = read_structures(tmp_path, "scr", "JPCLN001", ["left_lung", "heart", "lungs"])
    assert np.array_equal(got[0], masks["left_lung"]) and np.array_equal(got[1], masks["heart"])
    assert np.array_equal(got[2], masks["right_lung"] | masks["left_lung"])
    write_image_masks(tmp_path, "scr", "JPCLN002", {"right_clavicle": masks["heart"]})  # a new name gets a new bit
    assert stored_structures(tmp_path, "scr")[-1] == "right_clavicle"
    with pytest.raises(ManifestError, match="no 'heart' mask"):
        write_image_masks(tmp_path, "lungs_only", "a", {"lungs": masks["heart"]})
        read_structures(tmp_path, "lungs_only", "a", ["heart"])
    with pytest.raises(ManifestError, match="no mask of image 'JPCLN009'"):
        read_structures(tmp_path, "scr", "JPCLN009", ["heart"])


def test_synthetic_cohort_masks_read_without_structures_file(tmp_path):
    heart = np.zeros((8, 8), bool)
    heart[2:5, 3:6] = True
    lung = np.zeros((8, 8), bool)
    lung[1:7, 0:2] = True
    write_mask(mask_file(tmp_path, "jsrt", "jsrt_p00000_0"), encode_masks({"right_lung": lung, "heart": heart}))
    got = read_structures(tmp_path, "jsrt", "jsrt_p00000_0", ["heart", "right_lung", "left_lung"])
    assert np.array_equal(got[0], heart) and np.array_equal(got[1], lung) and not got[2].any()


def test_ids_unsafe_as_file_names_get_distinct_files(tmp_path):
    a = mask_file(tmp_path, "chexpert", "train/patient1/study1/view1_frontal.jpg")
    b = mask_file(tmp_path, "chexpert", "train/patient1_study1/view1_frontal.jpg")
    assert a.parent == b.parent == tmp_path / "masks" / "chexpert" and a != b and "/" not in a.name
