"""Image hashes for de-duplication: a content hash of the decoded pixels and a perceptual hash.

- `content_hash`: sha256 over (dtype, shape, pixel bytes) of the decoded array, so the same image stored as
  PNG at another compression level, as TIFF/BMP or as DICOM has the same hash, while an 8-bit image and its
  16-bit copy (different pixel values) do not.
- `perceptual_hash`: imagehash's pHash (64-bit DCT hash, as 16 hex digits) of the image stretched to 8 bits,
  so a JPEG re-encode, a slight resize or a bit-depth change lands within a few bits.

`hash_manifest` hashes every row of a manifest in batches over worker processes (or a dask cluster) and
caches the results as Parquet parts in a folder: a rerun after a kill reads the finished parts and hashes only
what is left, and memory stays bounded by one batch plus the (small) hash table. A cached hash is reused only
while the file's size and mtime_ns are those it was hashed at; a file that changed is hashed again.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import pandas as pd
from PIL import Image

from pipeline.errors import ChexError, ConfigError
from pipeline.imageio import read_image
from pipeline.progress import progress_bar

log = logging.getLogger(__name__)

HASH_COLUMNS = ("image_id", "path", "content_hash", "phash", "height", "width", "dtype", "error")
STAT_COLUMNS = ("size", "mtime_ns")  # what the file was when hashed: a cached row is valid while these match
CACHE_COLUMNS = (*HASH_COLUMNS, *STAT_COLUMNS)
CONSOLIDATED = "hashes.parquet"
DEFAULT_BATCH = 1024
EXECUTORS = ("process", "dask")
PHASH_SIDE = 128


def content_hash(pixels: np.ndarray) -> str:
    """sha256 (hex) over the dtype, shape and little-endian pixel bytes of a decoded image."""
    array = np.ascontiguousarray(pixels)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    digest = hashlib.sha256(f"{array.dtype.str}|{array.shape}|".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def perceptual_hash(pixels: np.ndarray, hash_size: int = 8) -> str:
    """pHash of the image (shrunk, min-max stretched to 8 bits), as hex (16 digits for the 64-bit hash)."""
    return str(imagehash.phash(Image.fromarray(_thumbnail(pixels)), hash_size=hash_size))


def phash_to_int(values: Sequence[str] | pd.Series | np.ndarray) -> np.ndarray:
    """Hex pHash strings (64-bit) to a uint64 array."""
    return np.array([int(v, 16) for v in values], dtype=np.uint64)


def hash_file(path: str) -> dict[str, Any]:
    """Decode one image and hash it; a file that cannot be decoded gets its reason in `error`."""
    try:
        pixels = read_image(path)
    except ChexError as exc:
        return {"content_hash": None, "phash": None, "height": -1, "width": -1, "dtype": "", "error": str(exc)}
    return {
        "content_hash": content_hash(pixels),
        "phash": perceptual_hash(pixels),
        "height": int(pixels.shape[0]),
        "width": int(pixels.shape[1]),
        "dtype": str(pixels.dtype),
        "error": None,
    }


def hash_manifest(
    frame: pd.DataFrame,
    root: str | Path,
    cache_dir: str | Path,
    *,
    workers: int = 1,
    executor: str = "process",
    scheduler: str | None = None,
    batch_size: int = DEFAULT_BATCH,
    description: str = "hashing",
    progress: bool = True,
) -> pd.DataFrame:
    """Hash the images of a manifest (`image_id`, `path` under `root`); one row per manifest row, in order.

    Finished batches are cached under `cache_dir` (one Parquet part per batch, written atomically, merged
    into `hashes.parquet` at the end), keyed by (image_id, path, file size, mtime_ns): a rerun hashes only rows
    not cached yet, or whose file changed since.
    `executor` 'process' uses `workers` local processes; 'dask' maps over the dask.distributed cluster at
    `scheduler` (an address; None starts a local cluster with `workers` workers).
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor must be one of {EXECUTORS}, not {executor!r}")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    root = Path(root)
    keys = frame[["image_id", "path"]].astype(str).reset_index(drop=True)
    stats = [_stat(root / p) for p in keys["path"]]
    keys["size"] = np.array([st[0] for st in stats], dtype=np.int64)
    keys["mtime_ns"] = np.array([st[1] for st in stats], dtype=np.int64)
    cached = read_hash_cache(cache_dir)
    key_columns = ["image_id", "path", *STAT_COLUMNS]
    done = set(zip(*(cached[c] for c in key_columns), strict=True))
    todo = keys[[key not in done for key in zip(*(keys[c] for c in key_columns), strict=True)]]
    if len(cached):
        log.info("%s: %d of %d images already hashed in %s", description, len(keys) - len(todo), len(keys), cache_dir)
    if len(todo):
        next_part = _next_part_number(cache_dir)
        with (
            _mapper(executor, workers, scheduler) as mapper,
            progress_bar(description, total=len(todo), enabled=progress) as advance,
        ):
            for start in range(0, len(todo), batch_size):
                batch = todo.iloc[start : start + batch_size]
                results = mapper(hash_file, [str(root / p) for p in batch["path"]])
                part = pd.concat([batch.reset_index(drop=True), pd.DataFrame(results)], axis=1)
                _write_atomic(_typed(part), cache_dir / f"part-{next_part:06d}.parquet")
                next_part += 1
                advance(len(batch))
    table = _consolidate(cache_dir)
    table = table.drop_duplicates(key_columns, keep="last")
    merged = keys.merge(table, on=key_columns, how="left", validate="one_to_one")
    return merged[list(HASH_COLUMNS)]


def read_hash_cache(cache_dir: str | Path) -> pd.DataFrame:
    """Every finished hash row in a cache folder (consolidated file and parts); empty when there is none."""
    cache_dir = Path(cache_dir)
    files = sorted(cache_dir.glob("part-*.parquet"))
    if (cache_dir / CONSOLIDATED).is_file():
        files.insert(0, cache_dir / CONSOLIDATED)
    if not files:
        return _typed(pd.DataFrame({c: [] for c in CACHE_COLUMNS}))
    table = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    for column in STAT_COLUMNS:  # a cache from before files' stats were kept: every row counts as changed
        if column not in table.columns:
            table[column] = -2
    return table


def _consolidate(cache_dir: Path) -> pd.DataFrame:
    """Merge the parts into one file (atomically, then delete the parts), so reruns open one file."""
    table = read_hash_cache(cache_dir).drop_duplicates(["image_id", "path"], keep="last")
    parts = sorted(cache_dir.glob("part-*.parquet"))
    if parts:
        _write_atomic(table, cache_dir / CONSOLIDATED)
        for part in parts:
            part.unlink()
    return table


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for column in ("image_id", "path", "content_hash", "phash", "dtype", "error"):
        frame[column] = frame[column].astype(object)
    for column in ("height", "width", *STAT_COLUMNS):
        frame[column] = frame[column].astype(np.int64)
    return frame[list(CACHE_COLUMNS)]


def _write_atomic(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)


def _stat(path: Path) -> tuple[int, int]:
    """(size, mtime_ns) of a file; (-1, -1) when it cannot be stat'ed (hashing then records the error)."""
    try:
        st = os.stat(path)
    except OSError:
        return -1, -1
    return st.st_size, st.st_mtime_ns


def _next_part_number(cache_dir: Path) -> int:
    numbers = [int(p.stem.split("-")[1]) for p in cache_dir.glob("part-*.parquet")]
    return max(numbers, default=-1) + 1


def _thumbnail(pixels: np.ndarray, side: int = PHASH_SIDE) -> np.ndarray:
    """Box-shrink (PIL `reduce`) to about `side` px on the short side, then stretch to 8 bits: pHash only
    looks at a 32x32 resize, and shrinking first makes it several times cheaper on full-size radiographs."""
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {pixels.shape}")
    image = Image.fromarray(pixels)
    if image.mode != "L":
        image = image.convert("I")  # 16-bit: PIL reduces "L", "I" and "F" images, not "I;16"
    factor = max(1, min(pixels.shape) // side)
    small = np.asarray(image.reduce(factor) if factor > 1 else image, dtype=np.float32)
    low, high = float(small.min()), float(small.max())
    if high <= low:
        return np.zeros(small.shape, dtype=np.uint8)
    return np.rint((small - low) * (255.0 / (high - low))).astype(np.uint8)


@contextmanager
def _mapper(executor: str, workers: int, scheduler: str | None) -> Iterator[Callable[..., list[Any]]]:
    """A `map(func, items) -> list` over the chosen executor, open for the whole run."""
    if executor == "dask":
        from distributed import Client, LocalCluster

        if scheduler:
            try:
                client = Client(scheduler, timeout="30s")
            except OSError as exc:
                raise ConfigError(f"cannot reach the dask scheduler at {scheduler!r} ({exc})") from None
            cluster = None
        else:
            cluster = LocalCluster(
                n_workers=max(workers, 1), threads_per_worker=1, processes=True, dashboard_address=None
            )
            client = Client(cluster)
        try:
            yield lambda func, items: client.gather(client.map(func, items, pure=False))
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    elif workers <= 1:
        yield lambda func, items: [func(item) for item in items]
    else:
        # spawn, not fork: the parent runs a progress-bar thread, and forking a threaded process can deadlock
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            yield lambda func, items: list(pool.map(func, items, chunksize=max(1, len(items) // (4 * workers))))
