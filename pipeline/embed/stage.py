"""`embed`: run a frozen backbone over every image once and add its last-layer tokens to the feature store."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.device import pick_device
from pipeline.embed.distributed import assign_units, barrier, dask_embed, init_process_group
from pipeline.embed.inputs import DatasetInput, dataset_input, plan_items
from pipeline.embed.loader import UnitRows, make_loader
from pipeline.embed.model import BackboneSpec
from pipeline.embed.preprocess import Preprocessing
from pipeline.embed.runner import RunStats, embed_batches
from pipeline.errors import ConfigError
from pipeline.progress import progress_bar
from pipeline.store.layout import StoreLayout
from pipeline.store.reader import FeatureStore
from pipeline.store.writer import StoreWriter, store_attrs
from pipeline.workspace import Workspace, resolve_workspace
from pipeline.workspace_stores import note_new_store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreSummary:
    """What an embed run did and what the store now holds."""

    store_path: Path
    backbone_name: str
    rows: int  # complete rows in the store (images x views)
    images: int  # distinct images in the store
    embedded: int  # rows this process computed
    skipped: int  # requested rows already in (or planned for) the store
    units_written: int
    pending_units: int  # units still unfinished (another writer's, or left by an error)
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class EmbedOptions:
    """How to embed (everything but the inputs and the backbone)."""

    n_layers: int = 4
    dtype: str = "float16"
    train_views: int = 1
    batch_size: int = 32
    workers: int = 2
    device: str | None = None
    dask: str | None = None
    unit_rows: int = 0
    chunk_rows: int = 0
    rank: int = 0
    world_size: int = 1
    progress: bool = True


def embed_datasets(
    workspace: Workspace | str | Path | None,
    datasets: Sequence[str],
    checkpoint: str | Path | None = None,
    backbone_name: str | None = None,
    *,
    random_init: str | None = None,
    seed: int = 0,
    image_size: int | None = None,
    num_heads: int | None = None,
    source: str = "auto",
    image_root: str | Path | None = None,
    store_path: str | Path | None = None,
    options: EmbedOptions | None = None,
) -> StoreSummary:
    """Embed the workspace's `datasets` into `features/<backbone_name>/` (default name: checkpoint folder)."""
    ws = workspace if isinstance(workspace, Workspace) else resolve_workspace(workspace)
    spec = BackboneSpec(
        checkpoint=str(checkpoint) if checkpoint else None,
        random_init=random_init,
        seed=seed,
        image_size=image_size,
        num_heads=num_heads,
    )
    name = backbone_name or spec.default_name()
    inputs = [dataset_input(ws, d, source=source, image_root=image_root) for d in datasets]
    summary = embed_inputs(inputs, Path(store_path) if store_path else ws.features_dir(name), spec, name, options)
    if store_path is None and (options or EmbedOptions()).rank == 0 and note_new_store(ws, name):
        log.info("%s is now the workspace's default backbone (change: chex workspace default-backbone NAME)", name)
    return summary


def embed_dataset(
    workspace: Workspace | str | Path | None,
    dataset: str,
    checkpoint: str | Path | None = None,
    backbone_name: str | None = None,
    **kwargs,
) -> StoreSummary:
    """`embed_datasets` for one data set."""
    return embed_datasets(workspace, [dataset], checkpoint, backbone_name, **kwargs)


def embed_inputs(
    inputs: Sequence[DatasetInput],
    store_path: Path,
    spec: BackboneSpec,
    backbone_name: str,
    options: EmbedOptions | None = None,
) -> StoreSummary:
    """Plan the rows not yet in the store, embed this rank's units, and summarise the store."""
    opt = options or EmbedOptions()
    start = time.perf_counter()
    joined = init_process_group(opt.world_size)
    model, config, sha = spec.load()
    if not 1 <= opt.n_layers <= config.depth:
        raise ConfigError(f"--layers {opt.n_layers} is not in 1..{config.depth} (the backbone's depth)")
    device = pick_device(opt.device)
    model.to(device)
    preprocessing = Preprocessing(config.img_size, config.mean, config.std)
    layout = StoreLayout(
        opt.n_layers,
        config.embed_dim,
        config.n_patches,
        config.num_registers,
        opt.dtype,
        opt.chunk_rows,
        opt.unit_rows,
    )
    attrs = store_attrs(
        backbone_name,
        config.to_dict(),
        spec.provenance,
        sha,
        layers=list(range(config.depth - opt.n_layers, config.depth)),
        dtype=opt.dtype,
        preprocessing=preprocessing.to_dict(),
        norm="final LayerNorm applied to each layer (DINOv2 norm=True)",
    )
    writer = StoreWriter.open(store_path, layout, attrs)
    items = plan_items(inputs, opt.train_views)
    new_units = writer.plan(items)
    skipped = len(items) - sum(len(u.image_ids) for u in new_units)
    # assign over all planned units (not just pending ones) so every rank computes the same split
    pending = {u.index for u in writer.pending()}
    mine = [u for u in assign_units(writer.ledger.units(), opt.rank, opt.world_size) if u.index in pending]
    log.info(
        "%s: %d rows requested, %d already in the store; %d units to embed on rank %d/%d",
        store_path,
        len(items),
        skipped,
        len(mine),
        opt.rank,
        opt.world_size,
    )
    try:
        if opt.dask:
            stats = dask_embed(
                opt.dask, spec, store_path, mine, preprocessing, opt.n_layers, opt.batch_size, n_workers=opt.workers
            )
        else:
            stats = _embed_local(model, device, writer, mine, preprocessing, opt)
    finally:
        for unit in mine:
            writer.ledger.release(unit, only_pid=os.getpid())
    if joined:
        barrier()
    store = FeatureStore.open(store_path)
    return StoreSummary(
        store_path=Path(store_path),
        backbone_name=backbone_name,
        rows=len(store),
        images=len(set(store.image_ids)),
        embedded=stats.rows,
        skipped=skipped,
        units_written=stats.units,
        pending_units=store.n_pending_units,
        seconds=time.perf_counter() - start,
    )


def _embed_local(model, device, writer: StoreWriter, units, preprocessing: Preprocessing, opt: EmbedOptions):
    if not units:
        return RunStats()
    dataset = UnitRows(writer.path, units, preprocessing, owner_pid=os.getpid())
    loader = make_loader(dataset, opt.batch_size, opt.workers, pin_memory=device.type == "cuda")
    total = sum(len(u.image_ids) for u in units)
    with progress_bar(f"embed {writer.path.name}", total, enabled=opt.progress) as advance:
        return embed_batches(model, loader, {u.index: u for u in units}, writer, opt.n_layers, device, advance)
