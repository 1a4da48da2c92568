import math
import random

import numpy as np
import pytest

from pipeline.pretrain.config import load_config
from pipeline.pretrain.masking import BlockMaskGenerator, batch_masks
from pipeline.pretrain.schedules import Schedules, cosine_schedule


def test_half_the_images_are_masked_with_ratios_in_range():
    grid, n = 14, 64
    masks = batch_masks(n, grid, random.Random(0), sample_probability=0.5, ratio_min_max=(0.1, 0.5))
    assert masks.shape == (n, grid * grid)
    ratios = masks.float().mean(1).numpy()
    masked = ratios[ratios > 0]
    assert len(masked) == n // 2
    # targets are int(196 * U(0.1, 0.5)); block masking never exceeds its target and rarely falls short
    assert masked.max() <= 0.5 and masked.min() >= 0.08
    # stratified targets spread over the whole range
    assert np.quantile(masked, 0.2) < 0.22 and np.quantile(masked, 0.8) > 0.38


def test_masks_are_blocks_and_reproducible():
    a = batch_masks(8, 14, random.Random(3))
    b = batch_masks(8, 14, random.Random(3))
    assert (a == b).all()
    one = BlockMaskGenerator(14)(40, random.Random(1))
    assert one.sum() == 40  # enough room for blocks to reach the target exactly
    rows = one.any(1).sum()
    assert rows < 14  # contiguous blocks, not salt-and-pepper


def test_cosine_schedule_warmup_and_decay():
    assert cosine_schedule(0, 1.0, 0.0, 100, warmup_steps=10) == 0.0
    assert cosine_schedule(5, 1.0, 0.0, 100, warmup_steps=10) == pytest.approx(0.5)
    assert cosine_schedule(10, 1.0, 0.0, 100, warmup_steps=10) == pytest.approx(1.0)
    assert cosine_schedule(55, 1.0, 0.0, 100, warmup_steps=10) == pytest.approx(0.5)
    assert cosine_schedule(100, 1.0, 0.1, 100) == 0.1
    assert cosine_schedule(3, 1.0, 0.0, 100, freeze_steps=5) == 0.0


def test_schedules_follow_the_recipe():
    cfg = load_config("vitl16_chexfound", ["train.total_steps=1000"])  # 100 epochs of 10 steps
    s = Schedules(cfg, world_size=32)  # batch 32 x 32 ranks = 1024: sqrt scaling leaves base lr
    assert s.at(100).lr == pytest.approx(2e-4)  # end of the 10 warm-up epochs
    assert s.at(50).lr == pytest.approx(1e-4)
    assert s.at(5).last_layer_lr == 0.0 and s.at(10).last_layer_lr == s.at(10).lr  # frozen for 1 epoch
    assert s.at(0).momentum == pytest.approx(0.994) and s.at(999).momentum == pytest.approx(1.0, abs=1e-6)
    assert s.at(0).teacher_temp == pytest.approx(0.04) and s.at(150).teacher_temp == pytest.approx(0.055)
    assert s.at(300).teacher_temp == pytest.approx(0.07)
    assert s.at(0).weight_decay == pytest.approx(0.04)
    mid = 0.4 + 0.5 * (0.04 - 0.4) * (1 + math.cos(math.pi * 0.5))
    assert s.at(500).weight_decay == pytest.approx(mid)
