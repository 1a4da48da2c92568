"""What a GLoRI probe will cost, said before it starts: time from a timed forward + backward of the actual head
on this machine, memory from the parameter, optimiser, activation and feature-cache sizes.

GLoRI's decoder is 768 wide with a 2048-wide feed-forward whatever the backbone (CheXFound's sizes); on a
small backbone that decoder, not the features, is the cost, so a much wider decoder than backbone is flagged
with the options that change it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from pipeline.errors import ChexError

log = logging.getLogger(__name__)

WIDE_RATIO = 2.0  # a decoder this many times wider than the backbone's tokens is worth a warning
_TIMED_BATCH = 32


@dataclass(frozen=True)
class GloriCost:
    """Estimated cost of one GLoRI probe run (sweep over `n_lrs` + refit)."""

    seconds: float
    peak_bytes: float
    decoder_dim: int
    ffn_dim: int
    backbone_dim: int

    @property
    def too_wide(self) -> bool:
        return self.decoder_dim >= WIDE_RATIO * self.backbone_dim

    def message(self, what: str) -> str:
        return (
            f"{what}: GLoRI rough estimate ~{_duration(self.seconds)} and ~{self.peak_bytes / 1e9:.1f} GB peak memory "
            f"(decoder {self.decoder_dim}/{self.ffn_dim} wide on {self.backbone_dim}-dim tokens)"
        )


def glori_cost(
    dim: int,
    n_layers: int,
    n_patches: int,
    n_outputs: int,
    n_train: int,
    n_val: int,
    n_images: int,
    epochs: int,
    n_lrs: int,
    batch_size: int,
    head_options: dict,
    device: str | None = None,
    rank: int = 0,
) -> GloriCost:
    """Time training steps of the real heads (all lrs stacked, as the sweep trains them, and one head, as the
    refit does) on random tokens, and scale them to the run. `n_patches` are the stored (pooled) patches;
    `rank` > 0: a projected store's R-dim tokens, read through a (random) basis as the probe reads them."""
    import torch

    from heads import HeadStack, build_head
    from pipeline.device import pick_device
    from pipeline.store.projection import random_projection

    width = n_layers * dim
    projection = random_projection(width, rank) if rank else None

    def make():
        return build_head(
            "glori", dim=dim, n_layers=n_layers, n_outputs=n_outputs, projection=projection, **head_options
        )

    head = make()
    embed_dim, ffn_dim = head.attn.embed_dim, head.linear1.out_features
    target = pick_device(device)
    batch = max(1, min(batch_size, _TIMED_BATCH))
    cls = torch.randn(batch, n_layers, dim, device=target)
    patch_shape = (batch, 1, n_patches, rank) if rank else (batch, n_layers, n_patches, dim)
    patch = torch.randn(patch_shape, device=target)

    def per_sample(n_stack: int) -> float:
        stack = HeadStack(make, n_stack).to(target).train()
        stack(cls, patch).sum().backward()  # warm-up
        started = time.perf_counter()
        for _ in range(2):
            stack(cls, patch).sum().backward()
        return (time.perf_counter() - started) / (2 * batch)

    sweep, refit = per_sample(n_lrs), per_sample(1)
    # sweep: all lrs train on train and score val each epoch (a forward is ~1/3 of a step); refit: train+val
    seconds = epochs * (sweep * (n_train + n_val / 3) + refit * (n_train + n_val)) + refit * n_images / 3
    params = sum(p.numel() for p in head.parameters())
    optimiser = params * 4 * 4 * n_lrs  # weights, gradients and two Adam moments per lr, float32
    per_sample_activations = 4 * (4 * n_patches * embed_dim + 8 * n_outputs * n_patches + 3 * n_outputs * ffn_dim)
    activations = per_sample_activations * batch_size * n_lrs
    cache = 4 * n_images * (n_layers * dim + n_patches * (rank or width))
    return GloriCost(seconds, optimiser + activations + cache, embed_dim, ffn_dim, dim)


def announce_glori_costs(workspace, jobs) -> None:
    """Log the estimate of each GLoRI job before any starts, and warn about a decoder much wider than the
    backbone. A job whose inputs are not ready is left for the probe itself to report."""
    for job in jobs:
        if job.head != "glori":
            continue
        try:
            cost, what = _job_cost(workspace, job)
        except ChexError:
            continue
        log.info("%s", cost.message(what))
        if cost.too_wide:
            log.warning(
                "%s: the GLoRI decoder (%d wide, feed-forward %d) is much wider than the backbone's %d-dim tokens, "
                "so the decoder, not the features, sets the cost; a width near the backbone's "
                "(e.g. --glori-dim %d --glori-ffn-dim %d) is far cheaper",
                what, cost.decoder_dim, cost.ffn_dim, cost.backbone_dim,
                _round8(cost.backbone_dim), 2 * _round8(cost.backbone_dim),
            )  # fmt: skip


def _job_cost(workspace, job) -> tuple[GloriCost, str]:
    from pipeline.cards import read_card
    from pipeline.probe.protocol import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, resolve_backbone
    from pipeline.store import FeatureStore

    backbone = resolve_backbone(workspace, job.backbone)
    store = FeatureStore.open(workspace.features_dir(backbone))
    card = read_card(workspace, job.dataset)
    import pandas as pd

    splits = pd.read_parquet(workspace.manifest_path(job.dataset), columns=["split"])["split"]
    config = job.config
    probe = card.probe or {}
    epochs = config.epochs or int(probe.get("epochs", DEFAULT_EPOCHS))
    batch_size = config.batch_size or int(probe.get("batch_size", DEFAULT_BATCH_SIZE))
    n_train = round(int((splits == "train").sum()) * config.label_fraction)
    n_val = int((splits == "val").sum())
    cost = glori_cost(
        store.dim, store.n_layers, store.layout.stored_patches, len(card.label_columns), n_train, n_val,
        len(splits), epochs, len(config.lrs), batch_size, dict(config.head_options), config.device,
        rank=store.layout.rank,
    )  # fmt: skip
    return cost, f"{job.dataset} / {backbone} / glori (label fraction {config.label_fraction:g})"


def _round8(value: int) -> int:
    return max(8, (value // 8) * 8)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
