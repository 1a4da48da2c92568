"""The DataLoader side of embedding: workers claim units, read and preprocess their images, yield rows."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.embed.inputs import MANIFEST_GROUP, iter_group, read_pixels
from pipeline.embed.preprocess import Preprocessing
from pipeline.errors import ImageReadError, StoreError
from pipeline.imageio import check_within
from pipeline.store.ledger import Ledger, Unit

log = logging.getLogger(__name__)


class UnitRows(IterableDataset):
    """Rows {x, unit, row} of the given units; each worker takes whole groups (shards) and claims their units.

    Claims carry the main process's pid, so they stay valid while the main process writes the unit. `roots` maps
    a data set read from its manifest to its image root: a source that is a link out of it is never followed
    (quarantined, as `chex shard` does).
    """

    def __init__(
        self,
        store_path: Path,
        units: Sequence[Unit],
        preprocessing: Preprocessing,
        owner_pid: int,
        roots: Mapping[str, Path] | None = None,
    ) -> None:
        self.store_path = Path(store_path)
        self.preprocessing = preprocessing
        self.owner_pid = owner_pid
        self.roots = dict(roots or {})
        self.works: list[list[Unit]] = []
        by_group: dict[str, list[Unit]] = {}
        for unit in units:
            if unit.group.startswith(MANIFEST_GROUP):
                self.works.append([unit])  # manifest units are independent: one work each
            else:
                by_group.setdefault(unit.group, []).append(unit)
        self.works += list(by_group.values())

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info else (0, 1)
        ledger = Ledger(self.store_path)
        for k, work in enumerate(self.works):
            if k % n_workers != worker:
                continue
            claimed = [u for u in work if ledger.claim(u, owner_pid=self.owner_pid)]
            if claimed:
                yield from self._rows(claimed)

    def _rows(self, units: list[Unit]) -> Iterator[dict]:
        wanted: dict[str, list[tuple[int, int, int]]] = {}
        sources: dict[str, str] = {}
        for unit in units:
            for row, (image_id, view) in enumerate(zip(unit.image_ids, unit.views, strict=True)):
                wanted.setdefault(image_id, []).append((unit.index, row, view))
                if unit.sources and unit.sources[row]:
                    sources[image_id] = unit.sources[row]
        group = units[0].group
        if group.startswith(MANIFEST_GROUP):
            root = self.roots.get(group.removeprefix(MANIFEST_GROUP))
            for image_id in list(wanted):
                source = Path(sources[image_id])
                try:
                    if root is not None:
                        check_within(source, root)
                    pixels = read_pixels(source)
                except ImageReadError as exc:  # quarantined like `chex shard` does: the run goes on
                    for unit_index, row, _ in wanted.pop(image_id):
                        unit = next(u for u in units if u.index == unit_index)
                        yield from self._unreadable(unit, row, image_id, str(source), str(exc))
                    continue
                for unit_index, row, view in wanted.pop(image_id):
                    yield {"x": self.preprocessing(pixels, image_id, view), "unit": unit_index, "row": row}
            return
        else:
            samples = iter_group(group)
        for image_id, pixels in samples:
            for unit_index, row, view in wanted.pop(image_id, ()):
                yield {"x": self.preprocessing(pixels, image_id, view), "unit": unit_index, "row": row}
        if wanted:
            raise StoreError(
                f"{len(wanted)} planned images were not found in {group}, e.g. {sorted(wanted)[:5]}; "
                "the input changed since the store was planned"
            )

    def _unreadable(self, unit: Unit, row: int, image_id: str, source: str, reason: str) -> Iterator[dict]:
        """Quarantine an unreadable image in the store's ledger; its row is written empty (and stays hidden)."""
        Ledger(self.store_path).quarantine(unit, image_id, source, reason)
        size = self.preprocessing.image_size
        yield {"x": torch.zeros(3, size, size), "unit": unit.index, "row": row}


def make_loader(dataset: UnitRows, batch_size: int, workers: int, pin_memory: bool = False) -> DataLoader:
    """Batches of rows; decode/resize run in `workers` processes, prefetched ahead of the model."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
        pin_memory=pin_memory,
        collate_fn=collate_rows,
    )


def collate_rows(rows: list[dict]) -> dict:
    """Stack row dicts into a batch {x (B,3,S,S), unit [B], row [B]}."""
    return {
        "x": torch.stack([r["x"] for r in rows]),
        "unit": [r["unit"] for r in rows],
        "row": [r["row"] for r in rows],
    }
