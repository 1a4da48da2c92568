"""Fitting a projected store's basis while embedding (`chex embed --rank R`): one forward pass over a seeded
sample of the training images, streamed into a float64 covariance, before any row is written."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import get_worker_info

from pipeline.device import autocast
from pipeline.embed.inputs import DatasetInput
from pipeline.embed.loader import UnitRows, make_loader
from pipeline.embed.preprocess import Preprocessing
from pipeline.errors import ConfigError
from pipeline.store.ledger import Unit
from pipeline.store.projection import Projection, check_finite_tokens, fit_projection
from pipeline.store.writer import Item

log = logging.getLogger(__name__)


def train_items(inputs: Sequence[DatasetInput], items: Sequence[Item], fit_images: int, seed: int) -> list[Item]:
    """View-0 items of images in a train split and in no val/test split of any input; a seeded sample of
    `fit_images` of them when more (0: all)."""
    train, held_out = set(), set()
    for inp in inputs:
        split = inp.manifest["split"].astype(str).to_numpy()
        ids = inp.manifest["image_id"].astype(str).to_numpy()
        train.update(ids[split == "train"])
        held_out.update(ids[split != "train"])
    keep = train - held_out
    chosen = [it for it in items if it.view == 0 and it.image_id in keep]
    if not chosen:
        raise ConfigError("--rank: the data sets to embed have no train-split images; the basis is fitted on them")
    if fit_images and len(chosen) > fit_images:
        picks = np.sort(np.random.default_rng(seed).choice(len(chosen), size=fit_images, replace=False))
        chosen = [chosen[k] for k in picks]
    return chosen


def fit_from_images(
    model,
    device: torch.device,
    items: Sequence[Item],
    preprocessing: Preprocessing,
    n_layers: int,
    dim: int,
    rank: int,
    pool: int,
    batch_size: int,
    workers: int,
    roots: Mapping[str, Path] | None = None,
) -> Projection:
    """The top-`rank` basis of the (pooled) patch tokens of `items`, computed by the backbone (no store writes;
    an unreadable image is left out of the fit, and quarantined when its row is embedded)."""
    by_group: dict[str, list[Item]] = {}
    for it in items:
        by_group.setdefault(it.group, []).append(it)
    units = [
        Unit(k, 0, [it.image_id for it in group], [0] * len(group), name, [it.source for it in group])
        for k, (name, group) in enumerate(by_group.items())
    ]
    loader = make_loader(_FitRows(units, preprocessing, roots), batch_size, workers)
    log.info("fitting a rank-%d basis on %d train images (one extra forward pass each)", rank, len(items))

    def batches() -> Iterator[torch.Tensor]:
        with torch.inference_mode():
            for batch in loader:
                with autocast(device):
                    _, patch, _ = model.tokens(batch["x"].to(device), n_layers)
                ids = [units[u].image_ids[r] for u, r in zip(batch["unit"], batch["row"], strict=True)]
                yield check_finite_tokens(patch.to("cpu", torch.float32), ids, "the backbone's fit tokens")

    return fit_projection(batches(), n_layers * dim, rank, pool, {"split": "train", "source": "embed"}, model.grid)


class _FitRows(UnitRows):
    """UnitRows of units that are not in any ledger: read, never claimed."""

    def __init__(self, units: Sequence[Unit], preprocessing: Preprocessing, roots: Mapping[str, Path] | None) -> None:
        super().__init__(Path("."), units, preprocessing, owner_pid=0, roots=roots)

    def _unreadable(self, unit: Unit, row: int, image_id: str, source: str, reason: str) -> Iterator[dict]:
        log.warning("basis fit: %s left out (%s)", source, reason)  # no ledger here: `.` is not a store
        return iter(())

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info else (0, 1)
        for k, work in enumerate(self.works):
            if k % n_workers == worker:
                yield from self._rows(work)
