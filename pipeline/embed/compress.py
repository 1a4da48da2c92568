"""`chex store compress`: make a projected and/or pooled store from an existing full one.

The basis is fitted on training-split images only (`train_image_ids`), streamed from the source store, and
saved in the new store before any row is written; rows are then copied unit by unit through the store's own
writer and ledger, so a killed compress resumes where it stopped and a rerun after more embedding adds the
new rows only. Memory: the fit (pipeline/store/projection.py) plus one source block of `BLOCK_BYTES`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import ConfigError, StoreError
from pipeline.manifest import read_manifest
from pipeline.progress import progress_bar
from pipeline.store import FeatureStore, Item, StoreLayout, StoreWriter
from pipeline.store.layout import DTYPES, pool_problem, square_grid
from pipeline.store.ledger import Ledger
from pipeline.store.projection import (
    BLOCK_BYTES,
    Projection,
    check_finite_tokens,
    fit_projection,
    load_projection,
    patch_transform,
    save_projection,
)
from pipeline.workspace import Workspace

log = logging.getLogger(__name__)

DEFAULT_FIT_IMAGES = 8192


@dataclass(frozen=True)
class CompressSummary:
    """What a compress run did and what the new store holds."""

    store_path: Path
    rows: int
    written: int
    rank: int
    pool: int
    variance_kept: float | None
    bytes_per_image: int
    seconds: float


def train_image_ids(workspace: Workspace, datasets: Sequence[str] | None = None) -> set[str]:
    """Image ids in the train split of the workspace's manifests (or `datasets`), minus any id that is in a val
    or test split of one of them (an image shared by two data sets must not leak into the basis)."""
    names = list(datasets) if datasets else workspace.datasets()
    if not names:
        raise ConfigError(f"no manifests in {workspace.manifests_dir}; the basis is fitted on their train split")
    train, held_out = set(), set()
    for name in names:
        frame = read_manifest(workspace.manifest_path(name))
        split = frame["split"].astype(str).to_numpy()
        ids = frame["image_id"].astype(str).to_numpy()
        train.update(ids[split == "train"])
        held_out.update(ids[split != "train"])
    return train - held_out


def check_request(rank: int, pool: int, dtype: str) -> None:
    """ConfigError for option values no store can have."""
    if rank < 0:
        raise ConfigError(f"--rank {rank}: must be 0 (full tokens) or a positive number of components")
    if pool < 1:
        raise ConfigError(f"--pool {pool}: must be 1 (no pooling) or more")
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: must be one of {', '.join(DTYPES)}")


def make_layout(source: StoreLayout, rank: int, pool: int, dtype: str, unit_rows: int = 0) -> StoreLayout:
    """The layout of a projected/pooled store for a backbone with `source`'s token shapes."""
    problem = pool_problem(pool, source_grid(source))
    if problem:
        raise ConfigError(problem)
    try:
        return StoreLayout(source.n_layers, source.dim, source.n_patches, source.n_registers, dtype, 0, unit_rows,
                           rank=rank, pool=pool, patch_grid=source.patch_grid)  # fmt: skip
    except ValueError as exc:
        raise ConfigError(f"--rank {rank} / --pool {pool}: {exc}") from exc


def source_grid(layout: StoreLayout) -> tuple[int, int] | None:
    """The full store's patch grid (h, w) as recorded, else square (stores written before they recorded it)."""
    return layout.patch_grid or square_grid(layout.n_patches)


def check_layout(writer: StoreWriter, wanted: StoreLayout) -> None:
    """StoreError when an existing store holds another rank or pooling than asked for."""
    have = writer.layout
    if (have.rank, have.pool) != (wanted.rank, wanted.pool):
        raise StoreError(
            f"feature store {writer.path} holds rank {have.rank}, pool {have.pool}, not rank {wanted.rank}, "
            f"pool {wanted.pool}; write to another store (--out / --backbone)"
        )


def ensure_projection(writer: StoreWriter, fit, request: dict | None = None) -> Projection | None:
    """The store's basis: the one saved (a resumed run), else `fit()` saved now, before any row is written.
    `request` (the options that chose the fit images) must match the saved basis's: a store keeps one basis."""
    if not writer.layout.rank:
        return None
    have = load_projection(writer.path)
    if have is not None:
        _check_fit_request(writer.path, have.fit.get("request"), request)
        return have
    projection = fit()
    with writer.ledger.planning_lock():
        if load_projection(writer.path) is None:  # a concurrent run may have saved its (identical) fit first
            save_projection(writer.path, projection)
    return load_projection(writer.path)


def _check_fit_request(path: Path, saved: dict | None, wanted: dict | None) -> None:
    """StoreError when the basis of the store at `path` was fitted for other options than this run asks for."""
    if saved is None or wanted is None or saved == wanted:
        return  # stores written before the request was recorded keep their basis, as before
    keys = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))

    def text(r: dict) -> str:
        return ", ".join(f"--{k.replace('_', '-')} {r.get(k)}" for k in keys)

    raise StoreError(
        f"feature store {path} holds a basis fitted with {text(saved)}, not with {text(wanted)} as asked: a store "
        "keeps the basis it was made with. Write to a new store (another --out), or rerun with the options it "
        "was made with"
    )


def compress_store(
    source_path: str | Path,
    out: str | Path,
    train_ids: set[str],
    rank: int,
    *,
    dtype: str = "float16",
    pool: int = 1,
    fit_images: int = DEFAULT_FIT_IMAGES,
    seed: int = 0,
    unit_rows: int = 0,
    progress: bool = True,
    fit_datasets: Sequence[str] | None = None,
) -> CompressSummary:
    """Write `out`: every complete row of the full store at `source_path`, projected to `rank` (0: keep the
    full width) and pooled by `pool`; the basis fitted on at most `fit_images` train images (0: all).
    `fit_datasets` names the data sets `train_ids` came from (None: all), recorded with the basis, so a rerun
    into the same store with other fit options is refused instead of silently keeping the old basis."""
    start = time.perf_counter()
    check_request(rank, pool, dtype)
    if not rank and pool == 1:
        raise ConfigError("give --rank R and/or --pool K: otherwise the new store would equal the old one")
    source = FeatureStore.open(source_path)
    if source.layout.rank or source.layout.pool != 1:
        raise StoreError(f"{source.path} is already projected or pooled; compress its full source store instead")
    if Path(out).resolve() == source.path.resolve():
        raise ConfigError(f"--out {out} is the source store; choose a new folder")
    layout = make_layout(source.layout, rank, pool, dtype, unit_rows)
    attrs = {k: v for k, v in source.attrs.items() if k not in ("layout", "projection")}
    attrs |= {"dtype": dtype, "compressed_from": {"path": str(source.path), "created": source.attrs.get("created")}}
    attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    writer = StoreWriter.open(out, layout, attrs)
    damaged = writer.take_back_damaged()  # missing or shortened files, a damaged basis: written again below
    if damaged:
        log.warning("%s: %d damaged units will be written again: %s", out, len(damaged), ", ".join(damaged))
    check_layout(writer, layout)
    request = {"dataset": ",".join(sorted(fit_datasets)) if fit_datasets else "all", "fit_images": fit_images,
               "seed": seed}  # fmt: skip

    def fit() -> Projection:
        rows = fit_rows(source, train_ids, fit_images, seed)
        log.info("fitting a rank-%d basis on %d train images of %s", rank, len(rows), source.path)
        ids = dict(zip(source.row_numbers.tolist(), source.image_ids, strict=True))
        batches = (
            check_finite_tokens(source.read(block, ("patch",))["patch"], [ids[r] for r in block.tolist()], source.path)
            for block in _blocks(rows, source.layout)
        )
        fit_info = {"split": "train", "source": str(source.path), "available_train_images": _n_train(source, train_ids),
                    "request": request}  # fmt: skip
        return fit_projection(batches, source.n_layers * source.dim, rank, pool, fit_info, source_grid(source.layout))

    projection = ensure_projection(writer, fit, request)
    transform = patch_transform(pool, projection, source_grid(source.layout))
    writer.plan(_copied_items(source))
    for dataset in {str(d) for d in source.datasets if d}:  # data sets that read other data sets' rows, verified
        writer.ledger.add_shared(dataset, Ledger(source.path).shared(dataset))
    keys = zip(source.image_ids, source.views, source.row_numbers, strict=True)
    index = {(str(i), int(v)): int(r) for i, v, r in keys}
    pending = writer.pending()
    written = 0
    with progress_bar(f"compress -> {Path(out).name}", sum(len(u.image_ids) for u in pending), progress) as advance:
        for unit in pending:
            if not writer.claim(unit):
                continue  # another writer owns it
            try:
                rows = np.array([index[(i, v)] for i, v in zip(unit.image_ids, unit.views, strict=True)])
                parts: dict[str, list[torch.Tensor]] = {p: [] for p in layout.parts}
                for block in _blocks(rows, source.layout):
                    tokens = source.read(block, layout.parts)
                    tokens["patch"] = transform(tokens["patch"])
                    for p in layout.parts:
                        parts[p].append(tokens[p])
                    advance(len(block))
                writer.write_unit(unit, {p: torch.cat(v) for p, v in parts.items()}, time.perf_counter() - start)
                written += len(rows)
            except BaseException:
                writer.release(unit)
                raise
    done = FeatureStore.open(out)
    return CompressSummary(Path(out), len(done), written, rank, pool,
                           done.projection.variance_kept if done.projection else None, layout.bytes_per_image,
                           time.perf_counter() - start)  # fmt: skip


def _copied_items(source: FeatureStore) -> list[Item]:
    """The source's rows as items, keeping each row's data set and content key (pipeline/store/content.py)."""
    rows = zip(source.image_ids, source.views, source.datasets, source.contents, strict=True)
    return [Item(str(i), int(v), f"compress:{d}" if d else "compress", "", str(d), str(c)) for i, v, d, c in rows]


def fit_rows(store: FeatureStore, train_ids: set[str], fit_images: int, seed: int) -> np.ndarray:
    """Store rows (view 0) of the train images, a seeded sample of `fit_images` of them when more, sorted."""
    mask = (store.views == 0) & np.isin(store.image_ids.astype(str), list(train_ids))
    rows = store.row_numbers[mask]
    if not len(rows):
        raise ConfigError(
            f"none of the images in feature store {store.path} is in a train split of the manifests; "
            "the basis is fitted on training images only (name the data sets with --dataset)"
        )
    if fit_images and len(rows) > fit_images:
        rows = np.random.default_rng(seed).choice(rows, size=fit_images, replace=False)
    return np.sort(rows)


def _n_train(store: FeatureStore, train_ids: set[str]) -> int:
    return int(((store.views == 0) & np.isin(store.image_ids.astype(str), list(train_ids))).sum())


def _blocks(rows: np.ndarray, layout: StoreLayout) -> Iterator[np.ndarray]:
    """`rows` in blocks of about BLOCK_BYTES of float32 full tokens."""
    per_row = max(1, layout.bytes_per_image * 4 // np.dtype(layout.dtype).itemsize)
    size = max(1, BLOCK_BYTES // per_row)
    for start in range(0, len(rows), size):
        yield rows[start : start + size]
