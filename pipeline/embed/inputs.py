"""What to embed and where its pixels come from: shards (`shards/<dataset>/`) or a manifest + image root.

Planning lists (image_id, view) items grouped by input: one group per shard file (so ranks owning disjoint
shards own disjoint store units) or one group per manifest. Reading streams a group's samples for the
units a worker claimed.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import ConfigError, ImageReadError, ShardError
from pipeline.manifest import read_manifest
from pipeline.shard_format import (
    IMAGE_EXT,
    INDEX_FILE,
    META_EXT,
    PIXEL_KEY,
    QUARANTINE_FILE,
    decode_png,
    pixel_digest,
)
from pipeline.store.writer import Item
from pipeline.workspace import Workspace, check_name

log = logging.getLogger(__name__)

MANIFEST_GROUP = "manifest:"


@dataclass(frozen=True)
class DatasetInput:
    """One data set's images: its manifest rows, and either a shard folder or an image root."""

    name: str
    manifest: pd.DataFrame
    image_root: Path | None = None
    shard_dir: Path | None = None
    uses_train_views: bool = True  # False: its task trains on the eval view only (`Task.uses_train_views`)

    @property
    def from_shards(self) -> bool:
        return self.shard_dir is not None


def dataset_input(
    workspace: Workspace, name: str, source: str = "auto", image_root: str | Path | None = None
) -> DatasetInput:
    """The workspace's inputs for `name`: shards when they exist (source 'auto'), else manifest + images."""
    if source not in ("auto", "shards", "manifest"):
        raise ConfigError(f"--source must be auto, shards or manifest, got {source!r}")
    check_name(name, "data set")
    frame = read_manifest(workspace.manifest_path(name))
    shard_dir = workspace.shards_dir(name)
    has_shards = (shard_dir / INDEX_FILE).is_file()
    if source == "shards" or (source == "auto" and has_shards and image_root is None):
        if not has_shards:
            raise ShardError(
                f"no shard index at {shard_dir / INDEX_FILE}; run `chex shard {name}` or use --source manifest"
            )
        _check_not_empty(shard_dir, name)
        return DatasetInput(name, frame, shard_dir=shard_dir, uses_train_views=_uses_train_views(workspace, name))
    root = Path(image_root) if image_root else workspace.image_root(name)
    if not root.is_dir():
        raise ConfigError(f"image root {root} of data set {name!r} does not exist; pass --root DIR")
    return DatasetInput(name, frame, image_root=root, uses_train_views=_uses_train_views(workspace, name))


def _uses_train_views(workspace: Workspace, name: str) -> bool:
    """Whether the data set's task draws augmented training views (segmentation does not: its masks are tied to
    the eval view's pixels), so that `--train-views K` stores no view nothing reads."""
    from pipeline.cards import read_card
    from pipeline.tasks.registry import task_for_card

    try:
        return task_for_card(read_card(workspace, name)).uses_train_views
    except ConfigError:  # no card known here (the probe says so): views as asked
        return True


def _check_not_empty(shard_dir: Path, name: str) -> None:
    """A shard set without a single sample (every image quarantined) is an error here, not an empty store."""
    from pipeline.shard.reader import read_index

    if int(read_index(shard_dir)["n_samples"].sum()) > 0:
        return
    quarantine = shard_dir / QUARANTINE_FILE
    try:
        n_quarantined = len(pd.read_csv(quarantine, dtype=str))
    except (OSError, ValueError):
        n_quarantined = 0
    if n_quarantined:
        raise ShardError(
            f"data set {name!r} has no images to embed: all {n_quarantined} were quarantined by `chex shard` "
            f"(each file's reason is in {quarantine}); replace the files and rerun `chex shard {name}`"
        )
    raise ShardError(
        f"data set {name!r} has no images to embed: {shard_dir} holds no finished shard; rerun `chex shard {name}`"
    )


def image_roots(inputs: Sequence[DatasetInput]) -> dict[str, Path]:
    """The image root of each data set read from its manifest: its sources may not lead out of it."""
    return {inp.name: inp.image_root for inp in inputs if not inp.from_shards and inp.image_root is not None}


def plan_items(inputs: Sequence[DatasetInput], train_views: int = 1) -> list[Item]:
    """Items to embed, in input order: every image's view 0, plus views 1..K-1 of training images."""
    if train_views < 1:
        raise ConfigError(f"--train-views must be >= 1, got {train_views}")
    items: list[Item] = []
    for inp in inputs:
        split = dict(zip(inp.manifest["image_id"].astype(str), inp.manifest["split"].astype(str), strict=True))
        views = train_views if inp.uses_train_views else 1
        if views < train_views:
            log.info("%s: its task trains on the eval view only; 1 view per image (not --train-views %d)",
                     inp.name, train_views)  # fmt: skip
        if inp.from_shards:  # content keys recorded by `chex shard` ("" in shards written before them)
            rows = [
                (str(shard), image_id, "", content)
                for shard in _shard_files(inp.shard_dir)
                for image_id, content in scan_samples(shard)
            ]
        else:  # content unknown until read: hashed only when another row claims the same id (`pixel_digest_of`)
            rows = [
                (MANIFEST_GROUP + inp.name, str(i), str(inp.image_root / p), "")
                for i, p in zip(inp.manifest["image_id"], inp.manifest["path"], strict=True)
            ]
        for group, image_id, source, content in rows:
            n_views = views if split.get(image_id) == "train" else 1
            items.extend(Item(image_id, v, group, source, inp.name, content) for v in range(n_views))
    return items


def scan_ids(shard: Path) -> list[str]:
    """Original image ids of a shard, in order (reads only the small json members)."""
    return [image_id for image_id, _ in scan_samples(shard)]


def scan_samples(shard: Path) -> list[tuple[str, str]]:
    """(original image id, content key or "" in older shards) of a shard's samples, in order (json members)."""
    samples = []
    try:
        with tarfile.open(shard, "r") as tar:
            for member in tar:
                if member.name.endswith("." + META_EXT):
                    meta = json.loads(tar.extractfile(member).read())
                    samples.append((str(meta["image_id"]), str(meta.get(PIXEL_KEY) or "")))
    except (OSError, tarfile.TarError, KeyError, ValueError) as exc:
        raise ShardError(f"cannot read shard {shard}: {exc}") from exc
    from pipeline.shard.reader import check_shard

    check_shard(shard, len(samples))  # a tar that lost members must not pass for a complete one
    return samples


def pixel_digest_of(path: str) -> str:
    """The content key of an image file's decoded pixels (as embedding reads them)."""
    return pixel_digest(read_pixels(Path(path)))


def iter_group(group: str, rows: dict[str, list[str]] | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """(image_id, pixels) of a group: a shard file's samples, or `rows` {image_id: [path]} of a manifest group."""
    if group.startswith(MANIFEST_GROUP):
        for image_id, paths in (rows or {}).items():
            yield image_id, read_pixels(Path(paths[0]))
        return
    yield from _iter_shard(Path(group))


def read_pixels(path: Path) -> np.ndarray:
    """A 2-D uint8/uint16 grey image from a source file (pipeline.imageio when present, else PIL)."""
    try:
        from pipeline.imageio import read_image
    except ImportError:
        read_image = None
    if read_image is not None:
        return read_image(path)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.mode.startswith("I"):
                return np.asarray(image).astype(np.uint16)
            return np.asarray(image.convert("L"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as exc:
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc


def _shard_files(shard_dir: Path) -> list[Path]:
    try:
        from pipeline.shard.reader import shard_paths
    except ImportError:
        frame = pd.read_parquet(shard_dir / INDEX_FILE)
        column = next(c for c in ("shard", "file", "path", "name") if c in frame.columns)
        return [shard_dir / Path(str(name)).name for name in frame[column]]
    return list(shard_paths(shard_dir))


def _iter_shard(shard: Path) -> Iterator[tuple[str, np.ndarray]]:
    try:
        from pipeline.shard.reader import iter_samples
    except ImportError:
        iter_samples = None
    if iter_samples is not None:
        for sample in iter_samples([shard]):
            yield sample.image_id, sample.pixels
        return
    # The shard contract read directly: members `<key>.png` and `<key>.json`, adjacent per sample.
    pending: dict[str, dict[str, bytes]] = {}
    with tarfile.open(shard, "r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.partition(".")
            pending.setdefault(key, {})[ext] = tar.extractfile(member).read()
            sample = pending[key]
            if IMAGE_EXT in sample and META_EXT in sample:
                del pending[key]
                yield str(json.loads(sample[META_EXT])["image_id"]), decode_png(io.BytesIO(sample[IMAGE_EXT]).read())
