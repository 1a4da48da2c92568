"""Writing a feature store: create or reopen it for one backbone, plan write units, write them, mark them done.

Every array is chunked along N in `chunk_rows` (inner chunks) grouped into Zarr v3 shards of `unit_rows`;
a write unit is exactly one shard, so concurrent writers (torchrun ranks, dask workers, a second `chex embed`)
never write the same file. Growth appends whole units. The ledger (`pipeline.store.ledger`) is the truth.
Every chunk ends in a crc32c (the last bytes-to-bytes codec), and each done marker records the unit's files
with size and sha256 (`pipeline.store.integrity`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from pipeline import __version__
from pipeline.errors import StoreError, disk_full_as_error
from pipeline.store.content import ContentConflict, RowKey, conflict_error, same_image
from pipeline.store.integrity import record_files
from pipeline.store.layout import STORE_FORMAT, StoreLayout
from pipeline.store.ledger import Ledger, Unit, unit_dataset
from pipeline.store.quant import quantize_int8

log = logging.getLogger(__name__)

# Keys of the store attributes that must match for a run to add rows to an existing store.
IDENTITY_KEYS = ("backbone", "checkpoint_sha256", "layers", "dtype", "preprocessing")


@dataclass(frozen=True)
class Item:
    """One row to embed: an image (and augmented view) from an input group."""

    image_id: str
    view: int = 0
    group: str = ""
    source: str = ""
    dataset: str = ""  # the data set it belongs to ("": unknown)
    content: str = ""  # content key of its decoded pixels (pipeline/store/content.py; "": unknown)


class StoreWriter:
    """Adds rows to the store of one backbone; safe with other writers on disjoint units."""

    def __init__(self, path: Path, layout: StoreLayout) -> None:
        self.path = Path(path)
        self.layout = layout
        self.ledger = Ledger(self.path)

    @classmethod
    def open(cls, path: str | Path, layout: StoreLayout, attrs: dict[str, Any]) -> StoreWriter:
        """Create the store, or reopen it after checking it was made by the same backbone (`attrs` identity)."""
        path = Path(path)
        ledger = Ledger(path)
        with ledger.planning_lock(), disk_full_as_error(path, "a new feature store"):
            existing = dict(zarr.open_group(path, mode="r").attrs) if (path / "zarr.json").is_file() else {}
            if "layout" in existing:
                _check_identity(path, existing, attrs)
                layout = StoreLayout.from_dict(existing["layout"])
            else:  # new, or a creation killed before its attributes (written last) landed: nothing to keep
                _create(path, layout, attrs)
        return cls(path, layout)

    def plan(self, items: Iterable[Item], digest: Callable[[str], str] | None = None) -> list[Unit]:
        """Allocate units for the items not yet in the store (done or planned); returns the new units.

        An item whose (image_id, view) is already planned is skipped only when it is the same image
        (`pipeline.store.content.same_image`; `digest` hashes a source file's pixels when contents are unknown);
        ids of other images are refused (StoreError naming data sets and ids) before anything is planned.
        Units never span input groups, so ranks that own disjoint groups (shards) own disjoint units.
        """
        with self.ledger.planning_lock(), disk_full_as_error(self.path, "the feature store's plan"):
            units = self.ledger.units()
            have: dict[tuple[str, int], RowKey] = {}
            for u in units:
                dataset = unit_dataset(u)
                for k, key in enumerate(zip(u.image_ids, u.views, strict=True)):
                    have[key] = RowKey(dataset, _at(u.contents, k), _at(u.sources, k))
            by_group: dict[str, list[Item]] = {}
            conflicts: list[ContentConflict] = []
            shared: dict[str, set[str]] = {}
            for item in items:
                key, row = (item.image_id, item.view), RowKey(item.dataset, item.content, item.source)
                old = have.get(key)
                if old is None:
                    have[key] = row
                    by_group.setdefault(item.group, []).append(item)
                    continue
                same = same_image(old, row, digest)
                if not same:
                    conflicts.append(ContentConflict(item.image_id, item.dataset, old.dataset, same is False))
                elif item.dataset and old.dataset and item.dataset != old.dataset:
                    shared.setdefault(item.dataset, set()).add(item.image_id)
            if conflicts:
                raise conflict_error(self.path, conflicts)
            next_index = 1 + max((u.index for u in units), default=-1)
            new: list[Unit] = []
            for group, group_items in by_group.items():
                for k in range(0, len(group_items), self.layout.unit_rows):
                    block = group_items[k : k + self.layout.unit_rows]
                    new.append(
                        Unit(
                            index=next_index,
                            start=next_index * self.layout.unit_rows,
                            image_ids=[it.image_id for it in block],
                            views=[it.view for it in block],
                            group=group,
                            sources=[it.source for it in block],
                            dataset=block[0].dataset,
                            contents=[it.content for it in block] if any(it.content for it in block) else [],
                        )
                    )
                    next_index += 1
            if new:
                self._resize(next_index * self.layout.unit_rows)
                for unit in new:
                    self.ledger.add_unit(unit)
            for dataset, ids in shared.items():
                self.ledger.add_shared(dataset, ids)
            return new

    def pending(self) -> list[Unit]:
        """Planned units not yet done (including ones another live writer is working on)."""
        done = self.ledger.done_indices()
        return [u for u in self.ledger.units() if u.index not in done]

    def claim(self, unit: Unit) -> bool:
        return self.ledger.claim(unit)

    def release(self, unit: Unit) -> None:
        self.ledger.release(unit)

    def write_unit(self, unit: Unit, tokens: dict[str, torch.Tensor], seconds: float = 0.0) -> None:
        """Write all rows of a claimed unit (`tokens[part]` in unit row order), flush, then mark it done."""
        with disk_full_as_error(self.path, f"feature store unit {unit.index} (rows {unit.start}-{unit.stop - 1})"):
            self._write_unit(unit, tokens, seconds)

    def _write_unit(self, unit: Unit, tokens: dict[str, torch.Tensor], seconds: float) -> None:
        n = len(unit.image_ids)
        self._remove_partials(unit)
        stored = {}
        for part in self.layout.parts:  # every part checked before anything is written
            x = tokens[part]
            if x.shape != (n, *self.layout.token_shape(part)):
                raise ValueError(f"{part}: got {tuple(x.shape)}, expected {(n, *self.layout.token_shape(part))}")
            quantized = self.layout.part_quantized(part)
            stored[part] = x.float() if quantized else x.to(getattr(torch, self.layout.part_dtype(part)))
            self._check_finite(unit, part, stored[part])
        group = zarr.open_group(self.path, mode="r+")
        for part, values in stored.items():
            if self.layout.part_quantized(part):
                q, scale = quantize_int8(values)
                group[part][unit.start : unit.stop] = q.numpy()
                group[f"{part}_scale"][unit.start : unit.stop] = scale.numpy()
            else:
                group[part][unit.start : unit.stop] = values.numpy()
        bad = self.ledger.quarantined(unit)  # unreadable images: their rows stay empty (view -1, hidden)
        group["image_id"][unit.start : unit.stop] = np.array([i if i not in bad else "" for i in unit.image_ids], str)
        views = [v if i not in bad else -1 for i, v in zip(unit.image_ids, unit.views, strict=True)]
        group["view"][unit.start : unit.stop] = np.asarray(views, dtype=np.int16)
        self.ledger.mark_done(unit, seconds, files=record_files(self.path, unit))

    def _check_finite(self, unit: Unit, part: str, stored: torch.Tensor) -> None:
        """StoreError naming the images whose `part` tokens are inf or NaN as stored (float16 overflows past
        65504 in magnitude): a store never holds a value no head can use."""
        bad = ~torch.isfinite(stored.reshape(len(stored), -1)).all(dim=1)
        if not bad.any():
            return
        ids = [unit.image_ids[k] for k in torch.nonzero(bad).flatten().tolist()]
        fix = (
            "the backbone's values exceed float16's range (65504): embed into a new store with --dtype float32 "
            "(or check the checkpoint); NaN means the backbone itself produced it"
            if self.layout.dtype != "float32"
            else "the backbone produced them: check the checkpoint"
        )
        raise StoreError(
            f"feature store {self.path}: {len(ids)} images have non-finite {part} tokens (inf/NaN) as "
            f"{self.layout.part_dtype(part)}, e.g. {ids[:5]}; nothing of unit {unit.index} was kept: {fix}"
        )

    def _remove_partials(self, unit: Unit) -> None:
        """Drop the temporary chunk files (`<key>.<uuid>.partial`, zarr's atomic write) that a writer killed
        mid-unit left; the claim makes this writer the unit's only owner, so none of them is in flight."""
        for name in self.array_names():
            chunks = self.path / name / "c"
            for stray in [*chunks.glob(f"{unit.index}.*.partial"), *chunks.glob(f"{unit.index}/**/*.partial")]:
                stray.unlink(missing_ok=True)

    def array_names(self) -> list[str]:
        names = [*self.layout.parts, "image_id", "view"]
        names += [f"{p}_scale" for p in self.layout.parts if self.layout.part_quantized(p)]
        return names

    def _resize(self, n_rows: int) -> None:
        group = zarr.open_group(self.path, mode="r+")
        for name in self.array_names():
            arr = group[name]
            if arr.shape[0] < n_rows:
                arr.resize((n_rows, *arr.shape[1:]))

    def take_back_damaged(self) -> list[str]:
        """Quick check (sizes) of every done unit's recorded files; a damaged unit loses its done marker and its
        files, so this run embeds it again. Returns the damaged unit names."""
        from pipeline.store.verify import verify_store

        with self.ledger.planning_lock():
            return list(verify_store(self.path, deep=False).damaged)


def store_attrs(
    backbone_name: str,
    backbone: dict[str, Any],
    checkpoint: str,
    checkpoint_sha256: str,
    layers: Sequence[int],
    dtype: str,
    preprocessing: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """The provenance attributes of a store (the identity keys plus descriptive ones)."""
    return dict(
        format=STORE_FORMAT,
        backbone_name=backbone_name,
        backbone=backbone,
        checkpoint=checkpoint,
        checkpoint_sha256=checkpoint_sha256,
        layers=list(layers),
        dtype=dtype,
        preprocessing=preprocessing,
        chex_version=__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    )


def _create(path: Path, layout: StoreLayout, attrs: dict[str, Any]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    group = zarr.open_group(path, mode="a", zarr_format=3)  # not "w": it would wipe the folder, ledger lock included
    # crc32c last: a damaged chunk fails to decode instead of reading back as the fill value
    c, u = layout.chunk_rows, layout.unit_rows
    for part in layout.parts:
        shape = layout.token_shape(part)
        compressor = [
            BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle" if layout.part_quantized(part) else "shuffle"),
            Crc32cCodec(),
        ]
        group.create_array(
            part,
            shape=(0, *shape),
            chunks=(c, *shape),
            shards=(u, *shape),
            dtype=layout.part_dtype(part),
            compressors=compressor,
            fill_value=0,
            overwrite=True,
        )
        if layout.part_quantized(part):
            group.create_array(
                f"{part}_scale",
                shape=(0, *shape[:-1]),
                chunks=(c, *shape[:-1]),
                shards=(u, *shape[:-1]),
                dtype="float32",
                compressors=compressor,
                fill_value=0,
                overwrite=True,
            )
    checked = [ZstdCodec(level=3), Crc32cCodec()]
    group.create_array("image_id", shape=(0,), chunks=(u,), dtype=str, compressors=checked, overwrite=True)
    group.create_array(
        "view", shape=(0,), chunks=(u,), dtype="int16", compressors=checked, fill_value=-1, overwrite=True
    )
    group.attrs.update({**attrs, "layout": layout.to_dict()})
    Ledger(path).ensure()


def _check_identity(path: Path, existing: dict[str, Any], wanted: dict[str, Any]) -> None:
    diffs = [k for k in IDENTITY_KEYS if existing.get(k) != wanted.get(k)]
    if diffs:
        detail = "; ".join(f"{k}: store {existing.get(k)!r} vs run {wanted.get(k)!r}" for k in diffs if k != "backbone")
        if "backbone" in diffs:
            detail = "backbone config differs" + (f"; {detail}" if detail else "")
        raise StoreError(
            f"feature store {path} was made by backbone {_describe(existing)}, not by {_describe(wanted)} "
            f"({detail}); use another --backbone name (store folder) for this backbone"
        )


def _at(values: list[str], k: int) -> str:
    return values[k] if k < len(values) else ""


def _describe(a: dict[str, Any]) -> str:
    sha = str(a.get("checkpoint_sha256"))[:12]
    return f"{a.get('backbone_name')!r} (checkpoint {a.get('checkpoint')}, sha256 {sha})"
