"""Scale-out with existing engines: torchrun ranks own disjoint groups/units; dask spreads units over workers."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from pipeline.embed.inputs import MANIFEST_GROUP
from pipeline.embed.loader import UnitRows
from pipeline.embed.model import BackboneSpec
from pipeline.embed.preprocess import Preprocessing
from pipeline.embed.runner import RunStats, embed_batches
from pipeline.store.layout import StoreLayout
from pipeline.store.ledger import Ledger, Unit
from pipeline.store.writer import StoreWriter

log = logging.getLogger(__name__)


def torchrun_rank() -> tuple[int, int]:
    """(rank, world size) as torchrun sets them (RANK / WORLD_SIZE), else (0, 1). Called by the CLI."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def init_process_group(world_size: int) -> bool:
    """Join torchrun's process group (gloo on CPU, nccl on GPU) so ranks can wait for each other at the end."""
    if world_size <= 1 or not torch.distributed.is_available() or torch.distributed.is_initialized():
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    torch.distributed.init_process_group(backend=backend)
    return True


def barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def assign_units(units: Sequence[Unit], rank: int, world_size: int) -> list[Unit]:
    """This rank's units: whole shards round-robin over ranks (disjoint shards and units); manifest units by index."""
    shards = sorted({u.group for u in units if not u.group.startswith(MANIFEST_GROUP)})
    position = {g: i for i, g in enumerate(shards)}
    return [u for u in units if (position.get(u.group, u.index)) % world_size == rank]


def dask_embed(
    address: str,
    spec: BackboneSpec,
    store_path: Path,
    units: Sequence[Unit],
    preprocessing: Preprocessing,
    n_layers: int,
    batch_size: int,
    n_workers: int = 2,
    roots: dict[str, Path] | None = None,
) -> RunStats:
    """Embed `units` as dask tasks (one per shard group or manifest unit) on `address` or a local cluster."""
    from distributed import Client, LocalCluster

    works: dict[str, list[int]] = {}
    for u in units:
        key = u.group if not u.group.startswith(MANIFEST_GROUP) else f"{u.group}#{u.index}"
        works.setdefault(key, []).append(u.index)
    cluster = None
    if address == "local":
        cluster = LocalCluster(
            n_workers=max(1, n_workers), threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)
    else:
        client = Client(address)
    try:
        futures = [
            client.submit(
                _embed_task, spec, str(store_path), indices, preprocessing, n_layers, batch_size, roots, pure=False
            )
            for indices in works.values()
        ]
        total = RunStats()
        for result in client.gather(futures):
            total.rows += result.rows
            total.units += result.units
            total.seconds = max(total.seconds, result.seconds)
        return total
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _embed_task(
    spec: BackboneSpec,
    store_path: str,
    indices: list[int],
    preprocessing: Preprocessing,
    n_layers: int,
    batch_size: int,
    roots: dict[str, Path] | None = None,
) -> RunStats:
    """One dask task: claim and embed the given units on this worker's CPU (fp32, no DataLoader workers)."""
    model = _cached_model(spec)
    import zarr

    layout = StoreLayout.from_dict(zarr.open_group(store_path, mode="r").attrs["layout"])
    writer = StoreWriter(Path(store_path), layout)
    by_index = {u.index: u for u in Ledger(store_path).units() if u.index in set(indices)}
    rows = UnitRows(Path(store_path), list(by_index.values()), preprocessing, owner_pid=os.getpid(), roots=roots)
    batches = _batched(iter(rows), batch_size)
    try:
        return embed_batches(model, batches, by_index, writer, n_layers, torch.device("cpu"))
    finally:
        for unit in by_index.values():
            Ledger(store_path).release(unit, only_pid=os.getpid())


@functools.lru_cache(maxsize=2)
def _cached_model(spec: BackboneSpec):
    return spec.load()


def _batched(rows, batch_size: int):
    from pipeline.embed.loader import collate_rows

    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == batch_size:
            yield collate_rows(batch)
            batch = []
    if batch:
        yield collate_rows(batch)
