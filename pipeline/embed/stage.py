"""`embed`: run a frozen backbone over every image once and add its last-layer tokens to the feature store."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.atomic import write_csv_atomic
from pipeline.device import pick_device
from pipeline.embed.compress import check_layout, check_request, ensure_projection
from pipeline.embed.distributed import assign_units, barrier, dask_embed, init_process_group
from pipeline.embed.fit import fit_from_images, train_items
from pipeline.embed.inputs import DatasetInput, dataset_input, image_roots, pixel_digest_of, plan_items
from pipeline.embed.loader import UnitRows, make_loader
from pipeline.embed.model import BackboneSpec
from pipeline.embed.preprocess import Preprocessing
from pipeline.embed.runner import RunStats, embed_batches
from pipeline.errors import ConfigError
from pipeline.progress import progress_bar
from pipeline.shard_format import QUARANTINE_FILE
from pipeline.store.layout import StoreLayout, pool_problem
from pipeline.store.ledger import Ledger
from pipeline.store.projection import patch_transform
from pipeline.store.reader import FeatureStore
from pipeline.store.writer import StoreWriter, store_attrs
from pipeline.workspace import Workspace, check_name, resolve_workspace
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
    patch_rank: int = 0  # > 0: store patch tokens projected on this many principal directions (`--rank`)
    pool: int = 1  # > 1: average pool x pool neighbourhoods of the patch grid (`--pool`)
    fit_images: int = 8192  # train images the projection is fitted on (0: all)


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
    family: str | None = None,
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
        family=family,
    )
    name = check_name(backbone_name or spec.default_name(), "backbone (the store folder; choose one with --backbone)")
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
    model = spec.load()  # a Backbone (pipeline/backbone/interface.py): tokens, grid, declared preprocessing
    if not 1 <= opt.n_layers <= model.depth:
        raise ConfigError(
            f"--layers {opt.n_layers} is not in 1..{model.depth} (blocks a {model.family} backbone yields tokens of)"
        )
    device = pick_device(opt.device)
    model.to(device)
    preprocessing: Preprocessing = model.preprocessing
    check_request(opt.patch_rank, opt.pool, opt.dtype)
    if (opt.patch_rank or opt.pool > 1) and opt.dask:
        raise ConfigError(
            "--rank / --pool are not available with --dask; embed a full store, then run `chex store compress`"
        )
    if problem := pool_problem(opt.pool, model.grid):
        raise ConfigError(f"{problem} ({model.family} at image size {preprocessing.image_size})")
    try:
        layout = StoreLayout(
            opt.n_layers,
            model.dim,
            model.n_patches,
            model.n_registers,
            opt.dtype,
            opt.chunk_rows,
            opt.unit_rows,
            rank=opt.patch_rank,
            pool=opt.pool,
            patch_grid=model.grid,
        )
    except ValueError as exc:
        raise ConfigError(f"--dtype {opt.dtype} / --rank {opt.patch_rank} / --pool {opt.pool}: {exc}") from exc
    attrs = store_attrs(
        backbone_name,
        model.config,
        spec.provenance,
        model.sha256,
        layers=list(range(model.depth - opt.n_layers, model.depth)),
        dtype=opt.dtype,
        preprocessing=preprocessing.to_dict(),
        **model.store_attrs(),  # family, token convention, patch grid, norm
    )
    writer = StoreWriter.open(store_path, layout, attrs)
    damaged = writer.take_back_damaged()  # missing or shortened unit files: embed those units again
    if damaged:
        log.warning("%s: %d damaged units will be embedded again: %s", store_path, len(damaged), ", ".join(damaged))
    check_layout(writer, layout)
    items = plan_items(inputs, opt.train_views)
    roots = image_roots(inputs)
    projection = ensure_projection(
        writer,
        lambda: fit_from_images(
            model, device, train_items(inputs, items, opt.fit_images, 0), preprocessing, opt.n_layers,
            model.dim, opt.patch_rank, opt.pool, opt.batch_size, opt.workers, roots,
        ),
    )  # fmt: skip
    transform = patch_transform(opt.pool, projection, model.grid) if (opt.patch_rank or opt.pool > 1) else None
    new_units = writer.plan(items, digest=pixel_digest_of)  # other images under stored ids: refused, named
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
                opt.dask, spec, store_path, mine, preprocessing, opt.n_layers, opt.batch_size, n_workers=opt.workers,
                roots=roots,
            )  # fmt: skip
        else:
            stats = _embed_local(model, device, writer, mine, preprocessing, opt, transform, roots)
    finally:
        for unit in mine:
            writer.ledger.release(unit, only_pid=os.getpid())
    if joined:
        barrier()
    if opt.rank == 0:
        write_quarantine(writer.ledger, store_path)
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


def write_quarantine(ledger: Ledger, store_path: Path) -> Path | None:
    """List the store's unreadable images in `<store>/quarantine.csv` (image_id, path, reason, unit)."""
    rows = [
        (image_id, path, reason, unit.name)
        for unit in ledger.units()
        for image_id, (path, reason) in ledger.quarantined(unit).items()
    ]
    target = Path(store_path) / QUARANTINE_FILE
    if not rows:
        target.unlink(missing_ok=True)
        return None
    write_csv_atomic(target, pd.DataFrame(rows, columns=["image_id", "path", "reason", "unit"]))  # formula-safe
    log.warning(
        "%s: %d images could not be read and were left out; they are listed in %s", store_path, len(rows), target
    )
    return target


def _embed_local(
    model, device, writer: StoreWriter, units, preprocessing: Preprocessing, opt: EmbedOptions, transform=None,
    roots: dict[str, Path] | None = None,
):  # fmt: skip
    if not units:
        return RunStats()
    dataset = UnitRows(writer.path, units, preprocessing, owner_pid=os.getpid(), roots=roots)
    loader = make_loader(dataset, opt.batch_size, opt.workers, pin_memory=device.type == "cuda")
    total = sum(len(u.image_ids) for u in units)
    with progress_bar(f"embed {writer.path.name}", total, enabled=opt.progress) as advance:
        return embed_batches(
            model, loader, {u.index: u for u in units}, writer, opt.n_layers, device, advance, transform=transform
        )
