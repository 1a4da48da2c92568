"""Reading a shard set: exact, reproducible iteration (`iter_samples`) and a streaming webdataset pipeline for
training (`training_stream`). PNGs are decoded with `pipeline.shard_format.decode_png`, keeping 16 bits.

Reading a whole tar compares what it held with the index: its number of samples (`n_samples`) and its sha256
(computed while streaming). A tar that lost members (even one of the recorded size) is a ShardError naming it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import ShardError
from pipeline.shard_format import IMAGE_EXT, INDEX_FILE, META_EXT, decode_png

_MEMBER = re.compile(r"([A-Za-z0-9_\-]+)\.([A-Za-z0-9]+)")


@dataclass
class Sample:
    """One decoded sample: the original image_id, its grey pixels and the manifest fields stored with it."""

    image_id: str
    pixels: np.ndarray  # (H, W) uint8 or uint16
    meta: dict[str, Any] = field(default_factory=dict)
    key: str = ""  # the tar member key (sanitised image_id)
    shard: str = ""  # the shard file it came from


def read_index(shard_dir: str | Path) -> pd.DataFrame:
    """index.parquet of a shard folder (shard, index, n_samples, bytes, sha256), sorted by shard number."""
    path = Path(shard_dir) / INDEX_FILE
    if not path.is_file():
        raise ShardError(f"no shard index at {path}: run `chex shard` for this data set first")
    try:
        index = pd.read_parquet(path)
    except Exception as exc:
        raise ShardError(f"{path}: unreadable shard index ({exc}); rerun `chex shard`") from exc
    return index.sort_values("index").reset_index(drop=True)


def shard_paths(shard_dir: str | Path) -> list[Path]:
    """The complete, non-empty shards of a shard folder, in shard order, as listed by its index.

    Raises ShardError if the index is missing or a listed tar is missing or has another size than recorded.
    """
    shard_dir = Path(shard_dir)
    paths = []
    for row in read_index(shard_dir).itertuples(index=False):
        path = shard_dir / str(row.shard)
        try:
            size = path.stat().st_size
        except OSError:
            raise ShardError(f"{path} is listed in the index but missing: rerun `chex shard` to rewrite it") from None
        if size != int(row.bytes):
            raise ShardError(
                f"{path} has {size} bytes but the index records {int(row.bytes)}: rerun `chex shard` to rewrite it"
            )
        if int(row.n_samples) > 0:
            paths.append(path)
    return paths


def index_record(shard: str | Path) -> dict[str, Any] | None:
    """The index row of `shard` (None when its folder has no index, or the index does not list it)."""
    shard = Path(shard)
    try:
        mtime = (shard.parent / INDEX_FILE).stat().st_mtime_ns
    except OSError:
        return None
    return _index_rows(str(shard.parent), mtime).get(shard.name)


@functools.lru_cache(maxsize=8)
def _index_rows(folder: str, mtime_ns: int) -> dict[str, dict[str, Any]]:
    return {str(row["shard"]): row for row in read_index(folder).to_dict("records")}


def check_shard(shard: str | Path, n_samples: int, sha256: str | None = None) -> None:
    """ShardError naming `shard` if it held another number of samples (or sha256) than its index records."""
    record = index_record(shard)
    if record is None:
        return
    fix = "rewrite it: delete it and rerun `chex shard` (or rerun `chex shard --verify sha256`)"
    if n_samples != int(record["n_samples"]):
        raise ShardError(
            f"{shard}: holds {n_samples} samples but the index records n_samples={int(record['n_samples'])}; "
            f"the tar lost members or was replaced; {fix}"
        )
    want = record.get("sha256")
    if sha256 is not None and isinstance(want, str) and want and sha256 != want:
        raise ShardError(f"{shard}: its sha256 differs from the one the index records; the tar changed; {fix}")


class _HashingReader:
    """A file wrapper that hashes every byte read through it (tarfile's stream mode reads sequentially)."""

    def __init__(self, handle: Any) -> None:
        self.handle, self.digest = handle, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data

    def hexdigest(self) -> str:
        while self.read(1 << 20):  # the end-of-archive padding tarfile does not read
            pass
        return self.digest.hexdigest()


def iter_samples(shard_paths: Sequence[str | Path], rank: int = 0, world_size: int = 1) -> Iterator[Sample]:
    """Every sample of the shards in order, read with tarfile (exact and reproducible).

    With `world_size` > 1, rank r reads shards r, r + world_size, ... when there are at least `world_size`
    shards; with fewer, every rank reads all shards and keeps samples r, r + world_size, ... Either way the
    ranks together see each sample exactly once.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank}")
    paths = [Path(p) for p in shard_paths]
    if len(paths) >= world_size:
        for path in paths[rank::world_size]:
            yield from _read_tar(path)
        return
    for position, sample in enumerate(s for path in paths for s in _read_tar(path)):
        if position % world_size == rank:
            yield sample


def training_stream(
    shard_dir: str | Path,
    shuffle_buffer: int = 1000,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    resampled: bool = True,
) -> Any:
    """A webdataset pipeline of `Sample`s for streaming training (usable as a torch IterableDataset; chain
    `.map(...)`, `.batched(...)` on it).

    resampled=True: each (rank, loader worker) draws shards with replacement from its own seeded stream,
    endlessly. resampled=False: one pass; shards split across ranks (node splitter) then loader workers
    (`wds.split_by_worker`). Samples are shuffled in a buffer of `shuffle_buffer` seeded by
    (seed, rank, worker, epoch), so a run is reproducible for a fixed number of loader workers.
    """
    import webdataset as wds  # imports torch: only streaming training needs it

    urls = [str(p) for p in shard_paths(shard_dir)]
    if not urls:
        raise ShardError(f"{shard_dir}: the index lists no non-empty shards; run `chex shard` first")
    if resampled:
        source = [wds.ResampledShards(urls, seed=seed, worker_seed=partial(_slot_seed, rank), deterministic=True)]
    else:
        source = [
            wds.SimpleShardList(urls),
            partial(_split_by_rank, rank=rank, world_size=world_size),
            wds.split_by_worker,
        ]
    return _stream_class()(
        *source,
        wds.tarfile_to_samples(),
        _SlotShuffle(shuffle_buffer, seed, rank),
        wds.map(_decode_sample),
    )


@functools.cache
def _stream_class() -> type:
    """wds.DataPipeline with the fluid `.map`/`.batched`/... methods of `wds.WebDataset`."""
    import webdataset as wds

    return type("ShardStream", (wds.DataPipeline, wds.FluidInterface), {"__module__": __name__})


def _read_tar(path: Path) -> Iterator[Sample]:
    """Samples of one tar: members `<key>.png` and `<key>.json`, adjacent per sample. Members are read as bytes,
    never extracted; any name or content that breaks the contract is a ShardError naming the tar."""
    pending: dict[str, dict[str, bytes]] = {}
    count = 0
    try:
        with open(path, "rb") as raw, tarfile.open(fileobj=(reader := _HashingReader(raw)), mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                match = _MEMBER.fullmatch(member.name)
                if match is None:
                    raise ShardError(
                        f"{path}: member {member.name!r} is not a sample file `<key>.png` / `<key>.json` "
                        "(keys are sanitised image ids); rewrite the shard with `chex shard`"
                    )
                key, ext = match.groups()
                handle = tar.extractfile(member)
                parts = pending.setdefault(key, {})
                parts[ext] = handle.read() if handle is not None else b""
                if IMAGE_EXT in parts and META_EXT in parts:
                    del pending[key]
                    count += 1
                    yield _sample(key, parts, path.name)
            digest = reader.hexdigest()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ShardError(f"{path}: unreadable tar ({exc}); rewrite it with `chex shard`") from None
    if pending:
        raise ShardError(f"{path}: incomplete sample(s) {sorted(pending)[:5]} (a png without json or vice versa)")
    check_shard(path, count, digest)


def _sample(key: str, parts: dict[str, bytes], shard: str) -> Sample:
    try:
        meta = json.loads(parts[META_EXT])
        image_id = str(meta["image_id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ShardError(f"{shard}: sample {key!r} has no valid json with an image_id ({exc!r})") from None
    try:
        pixels = decode_png(parts[IMAGE_EXT])
    except Exception as exc:  # Pillow raises several types for bytes that are not a PNG
        raise ShardError(f"{shard}: sample {key!r} ({image_id}) holds no decodable PNG ({exc})") from None
    return Sample(image_id, pixels, meta, key, shard)


def _decode_sample(raw: dict[str, Any]) -> Sample:
    url = str(raw.get("__url__", ""))
    return _sample(raw["__key__"], raw, Path(url).name)


def _worker() -> tuple[int, int]:
    import torch.utils.data

    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def _slot_seed(rank: int) -> int:
    return rank * 1000 + _worker()[0]


def _split_by_rank(src: Iterable[Any], rank: int, world_size: int) -> Iterator[Any]:
    for position, item in enumerate(src):
        if position % world_size == rank:
            yield item


class _SlotShuffle:
    """Buffer shuffle seeded per (seed, rank, loader worker, epoch): distinct per slot, reproducible per run."""

    def __init__(self, bufsize: int, seed: int, rank: int) -> None:
        self.bufsize, self.seed, self.rank, self.epoch = bufsize, seed, rank, -1

    def __call__(self, src: Iterable[Any]) -> Iterator[Any]:
        self.epoch += 1
        if self.bufsize < 2:
            yield from src
            return
        rng = random.Random(f"{self.seed}-{self.rank}-{_worker()[0]}-{self.epoch}")
        import webdataset as wds

        yield from wds.filters.shuffle(self.bufsize, min(self.bufsize, 100), rng=rng)(src)
