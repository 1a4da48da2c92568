"""Reading a feature store: select rows by image_id, read tokens as float32 torch tensors, batch or go dask.

Only rows of units the ledger marks done are visible; a store still being written (or killed) is readable,
and `rows()` names the ids that are missing and the command that embeds them. Before a unit's rows are first
read, its recorded files are checked (present, same size); a chunk that fails its crc32c is refused too. Either
way the StoreError names the unit and file: damaged data is never read as data. A projected store's basis is
checked on every open (pipeline/store/projection.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

from pipeline.errors import StoreError
from pipeline.store.integrity import check_files
from pipeline.store.layout import StoreLayout
from pipeline.store.ledger import Ledger, Unit, unit_dataset
from pipeline.store.projection import Projection, load_projection, repair_command
from pipeline.store.quant import dequantize

log = logging.getLogger(__name__)

DEFAULT_PARTS = ("cls", "patch")
_SPAN_BYTES = 16 << 20


def _row_contents(unit: Unit) -> np.ndarray:
    out = np.full(len(unit.image_ids), "", dtype=object)
    out[: len(unit.contents)] = unit.contents[: len(unit.image_ids)]
    return out


class FeatureStore:
    """A read-only view of the complete rows of one backbone's feature store."""

    def __init__(
        self,
        path: Path,
        group: zarr.Group,
        rows: np.ndarray,
        n_units: int,
        n_pending_units: int,
        datasets: np.ndarray | None = None,
        contents: np.ndarray | None = None,
    ) -> None:
        self.path = path
        self.n_units, self.n_pending_units = n_units, n_pending_units
        self._group = group
        self.attrs: dict[str, Any] = dict(group.attrs)
        self.layout = StoreLayout.from_dict(self.attrs["layout"])
        self._checked: set[int] = set()  # units whose files were found intact (or have no record to check)
        ids, views = (self._select(name, rows) for name in ("image_id", "view"))
        keep = views >= 0  # view -1: a row left empty because its image could not be read (quarantined)
        self._rows = rows[keep]  # global row index of every complete row, ascending
        self.image_ids: np.ndarray = np.asarray(ids[keep], dtype=object)
        self.views: np.ndarray = np.asarray(views[keep], dtype=np.int64)
        # per row: the data set it was embedded for and its content key ("": unknown; pipeline/store/content.py)
        blank = np.full(len(rows), "", dtype=object)
        self.datasets: np.ndarray = np.asarray(datasets if datasets is not None else blank, dtype=object)[keep]
        self.contents: np.ndarray = np.asarray(contents if contents is not None else blank, dtype=object)[keep]

    def _select(self, name: str, rows: np.ndarray) -> np.ndarray:
        if not len(rows):
            return np.array([], dtype=str if name == "image_id" else np.int64)
        try:
            return np.asarray(self._group[name].get_orthogonal_selection((rows,)))
        except (ValueError, RuntimeError):
            self._raise_damaged(name, int(rows[0]), int(rows[-1]) + 1)
            raise

    @classmethod
    def open(cls, path: str | Path) -> FeatureStore:
        """Open the store at `path`; StoreError if it is missing or holds no complete row yet."""
        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise StoreError(f"no feature store at {path}; run `chex embed` to create it")
        try:
            group = zarr.open_group(path, mode="r")
            StoreLayout.from_dict(group.attrs["layout"])
        except (KeyError, ValueError, TypeError) as exc:
            raise StoreError(f"{path} is not a chex feature store ({exc})") from exc
        ledger = Ledger(path)
        units = {u.index: u for u in ledger.units()}
        done = sorted(ledger.done_indices() & set(units))
        if not done:
            raise StoreError(f"feature store {path} has no complete rows yet; run (or resume) `chex embed`")
        rows = np.concatenate([np.arange(units[i].start, units[i].stop) for i in done]).astype(np.int64)
        datasets = np.concatenate([np.full(len(units[i].image_ids), unit_dataset(units[i]), object) for i in done])
        contents = np.concatenate([_row_contents(units[i]) for i in done])
        pending = len(units) - len(done)
        if pending:
            log.warning(
                "feature store %s: %d of %d write units are not complete; their rows are hidden",
                path,
                pending,
                len(units),
            )
        store = cls(path, group, rows, len(units), pending, datasets, contents)
        if store.layout.rank and store.projection is None:  # checked on every open: rows mean nothing without it
            raise StoreError(
                f"feature store {path} holds projected rows but no projection (basis); run `chex store verify`, "
                f"then rerun the same `{repair_command(store.attrs)}`"
            )
        return store

    # ---- shape facts ----------------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return self.layout.n_layers

    @property
    def dim(self) -> int:
        return self.layout.dim

    @property
    def n_patches(self) -> int:
        return self.layout.n_patches

    @property
    def n_registers(self) -> int:
        return self.layout.n_registers

    @cached_property
    def projection(self) -> Projection | None:
        """The basis of a projected store (pipeline/store/projection.py), None for a full one."""
        return load_projection(self.path, self._group) if self.layout.rank else None

    @property
    def complete(self) -> bool:
        """True when every planned unit is done."""
        return self.n_pending_units == 0

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def row_numbers(self) -> np.ndarray:
        """The global row index of every complete row, aligned with `image_ids` and `views`."""
        return self._rows

    # ---- selection ------------------------------------------------------------------------------------------
    @cached_property
    def _index(self) -> dict[tuple[str, int], int]:
        return {(i, int(v)): int(r) for i, v, r in zip(self.image_ids, self.views, self._rows, strict=True)}

    def rows(self, image_ids: Sequence[str], view: int = 0) -> np.ndarray:
        """Row indices of (image_id, view) in the order given; StoreError naming ids that are not in the store."""
        index = self._index
        out = np.empty(len(image_ids), dtype=np.int64)
        missing = []
        for k, image_id in enumerate(image_ids):
            row = index.get((str(image_id), view))
            if row is None:
                missing.append(str(image_id))
            else:
                out[k] = row
        if missing:
            name = self.attrs.get("backbone_name", self.path.name)
            raise StoreError(
                f"{len(missing)} of {len(image_ids)} images (view {view}) are not in feature store {self.path}, "
                f"e.g. {missing[:5]}; embed them with `chex embed DATASET --checkpoint {self.attrs.get('checkpoint')} "
                f"--backbone {name}`" + (" --train-views K" if view else "")
            )
        return out

    def foreign_images(self, image_ids: Sequence[str], dataset: str) -> dict[str, str]:
        """{image_id: data set} of `image_ids` whose view-0 row was embedded for another data set, and not verified
        to hold the same pixels (ledger `shared/`). Rows of unknown data set (older compressed stores) count as
        `dataset`'s: the check falls back to ids alone there."""
        wanted = {str(i) for i in image_ids} - Ledger(self.path).shared(dataset)
        owners = self.datasets
        # Vectorised first (every probe asks): usually no row belongs to another data set, and only those are looked up.
        other = (self.views == 0) & (owners != dataset) & (owners != "") & np.not_equal(owners, None)
        return {str(i): str(o) for i, o in zip(self.image_ids[other], owners[other], strict=True) if str(i) in wanted}

    def n_views(self, image_ids: Sequence[str]) -> int:
        """The number of views every given image has (views 0..k-1 all present)."""
        have: dict[str, set[int]] = {}
        for i, v in zip(self.image_ids, self.views, strict=True):
            have.setdefault(i, set()).add(int(v))
        counts = []
        for image_id in image_ids:
            views = have.get(str(image_id), set())
            k = 0
            while k in views:
                k += 1
            counts.append(k)
        return min(counts) if counts else 0

    # ---- reading --------------------------------------------------------------------------------------------
    def read(self, rows: Sequence[int] | np.ndarray, parts: Sequence[str] = DEFAULT_PARTS) -> dict[str, torch.Tensor]:
        """Tokens of `rows` (in the order given) as float32 tensors: cls (B,L,D), patch (B,L,P,D), registers."""
        rows = np.asarray(rows, dtype=np.int64)
        for part in parts:
            if part not in self.layout.parts:
                raise StoreError(f"feature store {self.path} has no {part!r} tokens; it holds {self.layout.parts}")
        uniq, inverse = np.unique(rows, return_inverse=True)
        self._check_units(uniq)
        spans = self._chunk_spans(uniq)
        out = {}
        for part in parts:
            q = self._read_rows(part, uniq, spans)
            scale = self._read_rows(f"{part}_scale", uniq, spans) if self.layout.part_quantized(part) else None
            out[part] = torch.from_numpy(dequantize(q, scale)[inverse])
        return out

    def iter_batches(
        self,
        rows: Sequence[int] | np.ndarray,
        batch_size: int,
        parts: Sequence[str] = DEFAULT_PARTS,
        shuffle: bool = False,
        seed: int = 0,
        prefetch: int = 2,
    ) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
        """(rows of the batch, tokens) batches; whole inner chunks are read together, the next batches prefetched.

        With `shuffle`, the order of chunks and of rows within each batch is random (seeded), so each
        batch still reads few chunks.
        """
        rows = np.asarray(rows, dtype=np.int64)
        order = self._chunk_order(rows, shuffle, seed)
        batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
        if shuffle:
            rng = np.random.default_rng(seed + 1)
            batches = [rng.permutation(b) for b in batches]
        with ThreadPoolExecutor(max_workers=max(1, prefetch)) as pool:
            futures = [pool.submit(self.read, b, parts) for b in batches[:prefetch]]
            for k, batch in enumerate(batches):
                if k + prefetch < len(batches):
                    futures.append(pool.submit(self.read, batches[k + prefetch], parts))
                yield batch, futures[k].result()
                futures[k] = None  # type: ignore[call-overload]

    def to_dask(self, part: str):
        """A float32 dask array of `part` over the complete rows (in `image_ids` order), read lazily."""
        import dask.array as da

        arr = da.from_zarr(self._group[part])
        if self.layout.part_quantized(part):
            scale = da.from_zarr(self._group[f"{part}_scale"])
            arr = arr.astype(np.float32) * scale[..., None]
        else:
            arr = arr.astype(np.float32)
        return arr[self._rows]

    def _chunk_spans(self, uniq: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
        """Runs of consecutive inner chunks covering sorted `uniq` rows: (first row, end row, rows inside)."""
        c = self.layout.chunk_rows
        chunks = uniq // c
        # a span also ends at every block of `per_span` chunks, so a read of rows scattered over the whole store
        # holds at most ~_SPAN_BYTES of raw tokens at a time instead of one slice as large as the store
        per_span = max(1, _SPAN_BYTES // (c * self.layout.bytes_per_image))
        breaks = np.flatnonzero((np.diff(chunks) > 1) | (np.diff(chunks // per_span) > 0)) + 1
        spans = []
        for rows in np.split(uniq, breaks):
            start = int(rows[0]) // c * c
            spans.append((start, min((int(rows[-1]) // c + 1) * c, self._group["view"].shape[0]), rows))
        return spans

    def _read_rows(self, name: str, uniq: np.ndarray, spans) -> np.ndarray:
        """Rows `uniq` of array `name`, read as whole-chunk slices (much faster than Zarr's point selection)."""
        arr = self._group[name]
        out = np.empty((len(uniq), *arr.shape[1:]), dtype=arr.dtype)
        k = 0
        for start, stop, rows in spans:
            try:
                block = arr[start:stop]
            except (ValueError, RuntimeError):  # crc32c mismatch, or bytes the codecs cannot decode
                self._raise_damaged(name, start, stop)
            out[k : k + len(rows)] = block[rows - start]
            k += len(rows)
        return out

    def _raise_damaged(self, name: str, start: int, stop: int) -> None:
        """Find the file of rows [start, stop) of array `name` that fails to decode; raise naming it and its unit."""
        arr = self._group[name]
        block_rows = (arr.shards or arr.chunks)[0]
        for first in range(start // block_rows * block_rows, stop, block_rows):
            try:
                arr[max(start, first) : min(stop, first + block_rows)]
            except (ValueError, RuntimeError) as exc:
                file = "/".join([name, "c", str(first // block_rows)] + ["0"] * (arr.ndim - 1))
                raise StoreError(
                    f"feature store {self.path}: unit-{first // self.layout.unit_rows:06d} is damaged: a chunk of "
                    f"{file} fails to decode ({exc}); {self._repair}"
                ) from None
        raise StoreError(f"feature store {self.path}: rows {start}-{stop - 1} of {name} fail to decode; {self._repair}")

    @property
    def _repair(self) -> str:
        return (
            "run `chex store verify` to list every damaged unit, then rerun the same "
            f"`{repair_command(self.attrs)}` to write them again"
        )

    def _check_units(self, uniq: np.ndarray) -> None:
        """Refuse to read rows of a unit whose recorded files are missing or changed size."""
        ledger = Ledger(self.path)
        for index in np.unique(uniq // self.layout.unit_rows).tolist():
            if index in self._checked:
                continue
            files = ledger.done_record(index).get("files")
            problems = check_files(self.path, files) if files else []
            if problems:
                raise StoreError(
                    f"feature store {self.path}: unit-{index:06d} is damaged: {'; '.join(problems)}; {self._repair}"
                )
            self._checked.add(index)

    def damaged_units(self) -> list[str]:
        """Done units whose recorded files are missing or changed size (a quick check: no digests)."""
        ledger = Ledger(self.path)
        damaged = []
        for index in sorted(ledger.done_indices()):
            files = ledger.done_record(index).get("files")
            if files and check_files(self.path, files):
                damaged.append(f"unit-{index:06d}")
        return damaged

    def _chunk_order(self, rows: np.ndarray, shuffle: bool, seed: int) -> np.ndarray:
        """`rows` grouped by inner chunk (chunks in order, or shuffled)."""
        if not shuffle:
            return rows
        chunk = rows // self.layout.chunk_rows
        rng = np.random.default_rng(seed)
        keys = rng.permutation(np.unique(chunk))
        rank = np.empty(chunk.max() + 1, dtype=np.int64)
        rank[keys] = np.arange(len(keys))
        return rows[np.argsort(rank[chunk], kind="stable")]

    def info(self) -> dict[str, Any]:
        """Shape, dtype, size on disk, provenance and completeness (for `chex store info`)."""
        size = sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        damaged = self.damaged_units()
        return dict(
            path=str(self.path),
            rows=len(self),
            images=len(set(self.image_ids)),
            max_views=int(self.views.max()) + 1 if len(self) else 0,
            shapes={p: (len(self), *self.layout.token_shape(p)) for p in self.layout.parts},
            dtype=self.layout.dtype,
            part_dtypes={p: self.layout.part_dtype(p) for p in self.layout.parts},
            chunk_rows=self.layout.chunk_rows,
            unit_rows=self.layout.unit_rows,
            units_done=self.n_units - self.n_pending_units,
            units_planned=self.n_units,
            complete=self.complete and not damaged,
            damaged_units=damaged,
            bytes_on_disk=size,
            bytes_per_row=size / max(1, len(self)),
            provenance={k: v for k, v in self.attrs.items() if k != "layout"},
            rank=self.layout.rank,
            pool=self.layout.pool,
            variance_kept=self.projection.variance_kept if self.projection is not None else None,
            bytes_per_image=self.layout.bytes_per_image,
        )
