"""Scoring at the mask's resolution within the crop: a perfect prediction scores ~1, pixels the crop left out are
never scored, the counts give the Dice/IoU that scipy gives, and the prior map is the training mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import dice as scipy_dice

from pipeline.embed.preprocess import Preprocessing
from pipeline.masks.align import input_map, to_input
from pipeline.masks.workspace import write_image_masks
from pipeline.segmentation.score import score_maps
from pipeline.segmentation.targets import aligned_targets, prior_map, store_preprocessing

PRE = Preprocessing(image_size=32, mean=(0.0,) * 3, std=(1.0,) * 3)  # short side + centre crop


def _write(root, n=3):
    rng = np.random.default_rng(0)
    rr, cc = np.mgrid[0:40, 0:60]
    ids = []
    for k in range(n):
        cy, cx = 20 + rng.integers(-3, 4), 30 + rng.integers(-3, 4)
        heart = (rr - cy) ** 2 / 100 + (cc - cx) ** 2 / 150 < 1
        edge = cc < 8  # left of the centred 40 x 40 crop (columns 10-49): never seen by the model
        write_image_masks(root, "ds", f"img{k}", {"heart": heart, "edge": edge})
        ids.append(f"img{k}")
    return ids


def test_truth_through_the_input_scores_one_and_cropped_pixels_are_left_out(tmp_path):
    ids = _write(tmp_path)
    targets = aligned_targets(tmp_path, "ds", ids, ["heart", "edge"], PRE, 16)
    assert targets.shape == (3, 2, 16, 16) and targets.dtype == torch.uint8
    scores = score_maps(targets, ids, ["p0", "p0", "p1"], tmp_path, "ds", ["heart", "edge"], PRE)
    heart = scores[scores["structure"] == "heart"]
    assert (heart["dice"] > 0.97).all()
    assert (heart["pixels"] == 40 * 40).all()  # the crop's pixels at the mask's resolution
    edge = scores[scores["structure"] == "edge"]
    assert (edge["true"] == 0).all() and (edge["dice"] == 1.0).all()  # outside the crop: nothing to find


def test_counts_give_scipys_dice(tmp_path):
    ids = _write(tmp_path, 1)
    rng = np.random.default_rng(1)
    noisy = torch.from_numpy(rng.integers(0, 256, (2, 16, 16), dtype=np.uint8))
    row = score_maps(noisy[None], ids, ["p"], tmp_path, "ds", ["heart", "edge"], PRE).iloc[0]
    from pipeline.masks.workspace import read_structures

    truth = read_structures(tmp_path, "ds", ids[0], ["heart"])[0]
    imap = input_map(PRE, 40, 60)
    rows, cols = imap.covered()
    pred = (imap.sample(noisy.float() / 255)[0] >= 0.5).numpy()
    expected = 1.0 - scipy_dice(pred.ravel(), truth[rows, cols].ravel())
    assert row["dice"] == pytest.approx(expected)
    assert row["dice"] == pytest.approx(2 * row["intersection"] / (row["predicted"] + row["true"]))
    assert row["iou"] == pytest.approx(row["intersection"] / (row["predicted"] + row["true"] - row["intersection"]))


def test_prior_is_the_training_mean_and_scores_every_image(tmp_path):
    ids = _write(tmp_path)
    targets = aligned_targets(tmp_path, "ds", ids, ["heart"], PRE, 16)
    prior = prior_map(targets, np.array([0, 1]))
    assert torch.allclose(prior, (targets[0].float() + targets[1].float()) / 2 / 255)
    scores = score_maps((prior * 255).round().to(torch.uint8), ids, ["a", "b", "c"], tmp_path, "ds", ["heart"], PRE)
    assert len(scores) == 3 and scores["dice"].between(0.5, 1.0).all()


def test_store_preprocessing_reads_the_recorded_attribute():
    attrs = {"preprocessing": {**PRE.to_dict(), "future_field": 1}}
    assert store_preprocessing(attrs) == PRE
    assert to_input(np.ones((1, 8, 8), bool), store_preprocessing(attrs)).shape == (1, 32, 32)
