"""Training batches streamed from the tar shards with webdataset: no unpacking to disk.

Each (rank, loader worker) pair is a *slot* with its own endless stream. Round r of a slot takes the shards in
an order drawn from (seed, r) (so every pass over the data is reshuffled: resampling across epochs), keeps the
shards of its slot (or, when there are fewer shards than slots, every n_slots-th sample), and passes them through
a webdataset shuffle buffer seeded by (seed, r, slot). Decoding keeps 8- and 16-bit depth; a sample's crops
and a batch's masks are drawn from seeds of their position in the stream. So the batch of step k is a function
of (seed, rank, world size, workers, k) alone, and `start_step` resumes the stream exactly: the samples before
it are skipped undecoded.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.pretrain.augment import MultiCropAugmentation, to_unit_float
from pipeline.pretrain.masking import batch_masks
from pipeline.shard_format import IMAGE_EXT, decode_png

log = logging.getLogger(__name__)

Batch = dict[str, Any]


class ShardStream(IterableDataset):
    """Endless stream of collated multi-crop batches for one rank (see the module docstring)."""

    def __init__(
        self,
        shards: list[Path],
        batch_size: int,
        augmentation: MultiCropAugmentation,
        patch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 1000,
        start_step: int = 0,
        mask_sample_probability: float = 0.5,
        mask_ratio_min_max: tuple[float, float] = (0.1, 0.5),
    ) -> None:
        super().__init__()
        if not shards:
            raise ValueError("ShardStream needs at least one shard")
        self.shards = [str(p) for p in shards]
        self.batch_size = batch_size
        self.augmentation = augmentation
        self.grid = augmentation.config.global_crops_size // patch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle_buffer = shuffle_buffer
        self.start_step = start_step
        self.mask_probability = mask_sample_probability
        self.mask_ratio = mask_ratio_min_max

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        n_workers = info.num_workers if info is not None else 1
        physical = info.id if info is not None else 0
        # The loader hands out batches round-robin from worker 0; relabelling the workers makes the first batch
        # after a resume come from the worker that owns step `start_step`.
        logical = (physical + self.start_step) % n_workers
        first_batch = max(0, math.ceil((self.start_step - logical) / n_workers))
        yield from self.slot_batches(self.rank * n_workers + logical, self.world_size * n_workers, first_batch)

    def slot_batches(self, slot: int, n_slots: int, first_batch: int = 0) -> Iterator[Batch]:
        """Batches `first_batch`, `first_batch + 1`, ... of one slot's stream."""
        samples = self.raw_samples(slot, n_slots)
        index = 0
        for _ in range(first_batch * self.batch_size):  # skip undecoded
            next(samples)
            index += 1
        batch_index = first_batch
        while True:
            crops = []
            while len(crops) < self.batch_size:
                raw = next(samples)
                rng = random.Random(_seed(self.seed, slot, index))
                index += 1
                try:
                    pixels = decode_png(raw[IMAGE_EXT])
                except Exception as exc:  # a damaged sample must not end a long run
                    log.warning("skipping undecodable sample %s in %s: %s", raw.get("__key__"), raw.get("__url__"), exc)
                    continue
                crops.append(self.augmentation(to_unit_float(pixels), rng))
            mask_rng = random.Random(_seed(self.seed, slot, batch_index, 1))
            yield collate(crops, self.grid, mask_rng, self.mask_probability, self.mask_ratio)
            batch_index += 1

    def raw_samples(self, slot: int, n_slots: int) -> Iterator[dict[str, Any]]:
        """The slot's endless stream of undecoded samples ({'__key__', 'png', 'json', ...}), round after round."""
        round_ = 0
        while True:
            order = list(self.shards)
            random.Random(_seed(self.seed, round_)).shuffle(order)
            if len(order) >= n_slots:
                mine, stride = order[slot::n_slots], 1
            else:
                mine, stride = order, n_slots
            stream = wds.tarfile_samples(iter([{"url": url} for url in mine]))
            if stride > 1:
                stream = (s for i, s in enumerate(stream) if i % stride == slot)
            stream = (s for s in stream if IMAGE_EXT in s)
            shuffled = wds.filters._shuffle(
                stream,
                bufsize=self.shuffle_buffer,
                initial=self.shuffle_buffer,
                rng=random.Random(_seed(self.seed, round_, slot)),
            )
            n = 0
            for sample in shuffled:
                n += 1
                yield sample
            if n == 0:
                raise RuntimeError(f"slot {slot} of {n_slots} got no samples from shards {mine}")
            round_ += 1


def collate(
    crops: list,
    grid: int,
    rng: random.Random,
    mask_probability: float = 0.5,
    mask_ratio: tuple[float, float] = (0.1, 0.5),
) -> Batch:
    """Crop-major stacks (all images' first global crop, then all second ones) and the global crops' masks."""
    n_global = len(crops[0].global_crops)
    n_local = len(crops[0].local_crops)
    global_crops = torch.stack([c.global_crops[i] for i in range(n_global) for c in crops])
    local_crops = torch.stack([c.local_crops[i] for i in range(n_local) for c in crops]) if n_local else None
    masks = batch_masks(len(global_crops), grid, rng, mask_probability, mask_ratio)
    return {"global_crops": global_crops, "local_crops": local_crops, "masks": masks}


def make_loader(stream: ShardStream, num_workers: int, seed: int, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over a ShardStream; its own generator keeps the global torch RNG untouched (exact resume)."""
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
        prefetch_factor=2 if num_workers > 0 else None,
    )


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])
