import random

import numpy as np
import torch

from pipeline.pretrain.augment import MultiCropAugmentation, to_unit_float
from pipeline.pretrain.config import load_config
from pipeline.pretrain.data import ShardStream

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _stream(shards, cfg, **kwargs):
    aug = MultiCropAugmentation(cfg.crops, MEAN, STD)
    return ShardStream(shards, batch_size=4, augmentation=aug, patch_size=8, shuffle_buffer=8, **kwargs)


def test_to_unit_float_keeps_16_bit_depth():
    pixels = np.array([[1000, 1001], [1002, 1003]], dtype=np.uint16)  # 4 levels within one 8-bit step
    assert torch.allclose(to_unit_float(pixels), torch.tensor([[[0.0, 1 / 3], [2 / 3, 1.0]]]))
    assert to_unit_float(np.array([[0, 255]], dtype=np.uint8)).tolist() == [[[0.0, 1.0]]]


def test_multicrop_shapes_grey_channels_and_seed():
    cfg = load_config("cpu_tiny")
    aug = MultiCropAugmentation(cfg.crops, MEAN, STD)
    image = torch.rand(1, 60, 50)
    crops = aug(image, random.Random(0))
    assert len(crops.global_crops) == 2 and len(crops.local_crops) == cfg.crops.local_crops_number
    assert crops.global_crops[0].shape == (3, 32, 32) and crops.local_crops[0].shape == (3, 16, 16)
    # a grey image stays grey: un-normalised channels are identical
    raw = crops.global_crops[1] * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]
    assert torch.allclose(raw[0], raw[1], atol=1e-5) and torch.allclose(raw[0], raw[2], atol=1e-5)
    again = aug(image, random.Random(0))
    assert all(torch.equal(a, b) for a, b in zip(crops.local_crops, again.local_crops, strict=True))
    other = aug(image, random.Random(1))
    assert not torch.equal(crops.global_crops[0], other.global_crops[0])


def test_stream_batches_are_collated_crop_major_with_masks(toy_shards):
    cfg = load_config("cpu_tiny")
    batch = next(iter(_stream(toy_shards, cfg)))
    assert batch["global_crops"].shape == (8, 3, 32, 32)
    assert batch["local_crops"].shape == (4 * cfg.crops.local_crops_number, 3, 16, 16)
    assert batch["masks"].shape == (8, 16) and int(batch["masks"].any(1).sum()) == 4
    assert torch.isfinite(batch["global_crops"]).all()


def test_stream_resumes_exactly_at_a_step(toy_shards):
    cfg = load_config("cpu_tiny")
    it = iter(_stream(toy_shards, cfg))
    batches = [next(it) for _ in range(8)]  # 32 samples: crosses the 20-sample round boundary
    resumed = iter(_stream(toy_shards, cfg, start_step=5))
    for expected in batches[5:]:
        got = next(resumed)
        assert torch.equal(got["global_crops"], expected["global_crops"])
        assert torch.equal(got["masks"], expected["masks"])


def test_slots_split_the_data_between_ranks(toy_shards):
    cfg = load_config("cpu_tiny")
    stream = _stream(toy_shards, cfg)
    first_round = {}
    for rank in range(2):  # 2 shards, 2 ranks: one shard each per round
        samples = stream.raw_samples(rank, 2)
        keys = {next(samples)["__key__"] for _ in range(10)}
        first_round[rank] = keys
    assert not first_round[0] & first_round[1]
    assert len(first_round[0] | first_round[1]) == 20
    # more slots than shards: samples are split by position instead
    samples = [stream.raw_samples(slot, 4) for slot in range(4)]
    got = [{next(s)["__key__"] for _ in range(5)} for s in samples]
    assert len(set().union(*got)) == 20
