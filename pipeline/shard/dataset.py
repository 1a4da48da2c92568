"""`shard_dataset`: plan, write the unfinished shards (in-process, a process pool, or dask), then index.

A rerun after any interruption skips the shards whose tar + sidecar verify and writes only the rest.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from pipeline.cards import DatasetCard
from pipeline.errors import ConfigError, ShardError, disk_full_as_error
from pipeline.imageio import MAX_PIXELS, VoiMode
from pipeline.manifest import read_manifest, validate_manifest
from pipeline.progress import progress_bar
from pipeline.shard import writer
from pipeline.shard.index import INDEX_COLUMNS, MANIFEST_FILE, QUARANTINE_COLUMNS, IndexSummary, build_index
from pipeline.shard.plan import ShardTask, file_sizes, plan_shards
from pipeline.shard.quarantine import QuarantineReport, report
from pipeline.shard.writer import TMP_SUFFIX, ShardResult, WriteOptions, load_done
from pipeline.shard_format import INDEX_FILE, QUARANTINE_FILE
from pipeline.workspace import check_name

log = logging.getLogger(__name__)
Executor = Literal["process", "dask"]
MIN_READABLE = 0.5  # refuse to shard when fewer than this fraction of the images exist


@dataclass
class ShardSummary:
    """The outcome of `shard_dataset`."""

    out_dir: Path
    n_shards: int  # complete shards in the index
    n_samples: int
    n_quarantined: int
    n_missing: int  # quarantined because the file does not exist
    missing_examples: list[str]
    reasons: dict[str, int]
    n_bytes: int
    written: int  # shards written by this run
    skipped: int  # finished shards reused from an earlier run
    seconds: float
    images_per_second: float  # inputs handled by this run (written + quarantined) per second
    pending: list[str] = field(default_factory=list)

    @property
    def megabytes(self) -> float:
        return self.n_bytes / 1e6


def shard_dataset(
    manifest: Path | str | pd.DataFrame,
    image_root: Path | str,
    out_dir: Path | str,
    name: str,
    target_shard_bytes: float = 1e9,
    samples_per_shard: int | None = None,
    max_side: int | None = None,
    workers: int = 1,
    executor: Executor = "process",
    dask_address: str | None = None,
    order: Sequence[int] | None = None,
    progress: bool = True,
    *,
    voi: VoiMode = "auto",
    max_pixels: int = MAX_PIXELS,
    verify: str = "size",
    min_readable: float = MIN_READABLE,
    card: DatasetCard | None = None,
) -> ShardSummary:
    """Pack the manifest's images into webdataset tar shards `<out_dir>/<name>-NNNNNN.tar` plus index.parquet,
    quarantine.csv and manifest.parquet. Resumable; unreadable images are quarantined, never fatal, unless
    every image is: then a ShardError points at quarantine.csv (written, with each file's reason).

    `workers` > 1 uses a process pool; `executor="dask"` submits the shards to the dask.distributed scheduler
    at `dask_address` (None or "local": a LocalCluster of `workers` processes). `verify` ("size" or
    "sha256") is how finished shards of an earlier run are checked before being reused. Existence is checked
    up front: when fewer than `min_readable` of the images exist (none at all, always), nothing is written and a
    ShardError says so (a wrong --root is the usual cause). With the data set's `card`, label values are checked
    too, so a bad label stops here rather than at probe time.
    """
    started = time.perf_counter()
    check_name(name, "shard set")  # it names the tar files
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if executor not in ("process", "dask"):
        raise ConfigError(f"executor must be 'process' or 'dask', got {executor!r}")
    if verify not in ("size", "sha256"):
        raise ConfigError(f"verify must be 'size' or 'sha256', got {verify!r}")
    if isinstance(manifest, pd.DataFrame):
        validate_manifest(manifest, card, source="manifest frame")
        frame = manifest
    else:
        frame = read_manifest(manifest, card)
    image_root, out_dir = Path(image_root).resolve(), Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)

    options = WriteOptions(max_side, voi, max_pixels)
    sizes = _check_readable(frame, image_root, order, min_readable, name)
    tasks = plan_shards(
        frame,
        image_root,
        name,
        target_shard_bytes=target_shard_bytes,
        samples_per_shard=samples_per_shard,
        max_side=max_side,
        order=order,
        sizes=np.maximum(sizes, 0),
    )
    results: dict[int, ShardResult] = {}
    for task in tasks:
        done = load_done(task, out_dir, options, verify=verify)
        if done is not None:
            results[task.index] = done
    pending = [t for t in tasks if t.index not in results]
    skipped = len(results)
    log.info("%s: %d shards planned, %d finished earlier, %d to write", name, len(tasks), skipped, len(pending))
    _remove_leftovers(out_dir, name)
    if pending:  # readers meanwhile see only the verified shards, never one being rewritten
        build_index(out_dir, tasks, frame, options, results=results, verify=verify)

    with (
        progress_bar(f"shard {name}", total=len(tasks), enabled=progress) as advance,
        disk_full_as_error(out_dir, f"the shards of {name}"),
    ):
        advance(skipped)
        for result in _run(pending, image_root, out_dir, options, workers, executor, dask_address):
            results[result.record["index"]] = result
            advance()
        index = _current_index(out_dir, tasks, results) if not pending else None
        if index is None:  # a rerun with nothing to do leaves the index (and the sharded manifest) as they are
            index = build_index(out_dir, tasks, frame, options, results=results, verify=verify)
    seconds = time.perf_counter() - started
    fresh = [r for r in results.values() if r.written]
    handled = sum(r.record["n_samples"] + len(r.quarantine) for r in fresh)
    quarantine = report(index.quarantine)
    if index.n_samples == 0 and quarantine.n_quarantined and not index.pending:
        _refuse_all_quarantined(name, out_dir, quarantine)
    return ShardSummary(
        out_dir=out_dir,
        n_shards=index.n_shards,
        n_samples=index.n_samples,
        n_quarantined=quarantine.n_quarantined,
        n_missing=quarantine.n_missing,
        missing_examples=quarantine.missing_examples,
        reasons=quarantine.reasons,
        n_bytes=index.n_bytes,
        written=len(fresh),
        skipped=skipped,
        seconds=seconds,
        images_per_second=handled / seconds if seconds > 0 else 0.0,
        pending=index.pending,
    )


def _check_readable(
    frame: pd.DataFrame, image_root: Path, order: Sequence[int] | None, min_readable: float, name: str
) -> np.ndarray:
    """File sizes of the manifest rows (-1: missing); ShardError when too few of the (ordered) rows exist."""
    if not 0.0 <= min_readable <= 1.0:
        raise ConfigError(f"--min-readable must be a fraction in [0, 1], got {min_readable}")
    paths = frame["path"].astype(str).to_numpy()
    sizes = file_sizes(image_root, paths)
    chosen = sizes if order is None else sizes[np.asarray(order, dtype=np.int64)]
    found = int((chosen >= 0).sum())
    if len(chosen) and (found == 0 or found / len(chosen) < min_readable):
        missing = [str(p) for p in (paths if order is None else paths[np.asarray(order)])[chosen < 0][:3]]
        raise ShardError(
            f"{name}: only {found} of {len(chosen)} images exist under {image_root} (e.g. missing {missing}); "
            f"at least {min_readable:.0%} must (--min-readable). Check --root; nothing was written"
        )
    return sizes


def _refuse_all_quarantined(name: str, out_dir: Path, quarantine: QuarantineReport) -> None:
    """Not one image could be read: a shard set of nothing is an error, not a success with 0 samples."""
    shown = "; ".join(f"{n} x {reason}" for reason, n in list(quarantine.reasons.items())[:3])
    raise ShardError(
        f"{name}: all {quarantine.n_quarantined} images of {name} were quarantined, none could be read "
        f"(e.g. {shown}); each file's reason is in {out_dir / QUARANTINE_FILE}. Replace or convert the files "
        "(or fix --root, --voi) and rerun `chex shard`"
    )


def _current_index(out_dir: Path, tasks: list[ShardTask], results: dict[int, ShardResult]) -> IndexSummary | None:
    """The summary of the index already on disk when it lists exactly these finished shards (else None)."""
    try:
        index = pd.read_parquet(out_dir / INDEX_FILE)
    except Exception:  # missing or unreadable: rebuild it
        return None
    records = sorted((r.record for r in results.values()), key=lambda r: r["index"])
    on_disk = index.sort_values("index").to_dict("records")
    same = len(records) == len(on_disk) and all(
        {k: a[k] for k in INDEX_COLUMNS} == {k: (v.item() if hasattr(v, "item") else v) for k, v in b.items()}
        for a, b in zip(records, on_disk, strict=True)
    )
    if not same or not (out_dir / MANIFEST_FILE).is_file():
        return None
    quarantine = pd.DataFrame(
        [{**q, "shard": t.file} for t in tasks for q in results[t.index].quarantine], columns=QUARANTINE_COLUMNS
    )
    return IndexSummary(len(index), int(index["n_samples"].sum()), int(index["bytes"].sum()), quarantine)


def _run(
    tasks: list[ShardTask],
    image_root: Path,
    out_dir: Path,
    options: WriteOptions,
    workers: int,
    executor: Executor,
    dask_address: str | None,
) -> Iterator[ShardResult]:
    """Yield each task's result as it finishes. `writer.write_shard` is looked up at call time (tests count it)."""
    if not tasks:
        return
    kwargs = {"max_side": options.max_side, "voi": options.voi, "max_pixels": options.max_pixels}
    if executor == "dask":
        yield from _run_dask(tasks, image_root, out_dir, kwargs, workers, dask_address)
    elif workers == 1:
        for task in tasks:
            yield writer.write_shard(task, image_root, out_dir, **kwargs)
    else:
        # spawn: the parent holds a progress thread, and forking a threaded process can deadlock
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context) as pool:
            futures = [pool.submit(writer.write_shard, t, image_root, out_dir, **kwargs) for t in tasks]
            try:
                for future in as_completed(futures):
                    yield future.result()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise


def _run_dask(
    tasks: list[ShardTask],
    image_root: Path,
    out_dir: Path,
    kwargs: dict,
    workers: int,
    dask_address: str | None,
) -> Iterator[ShardResult]:
    from distributed import Client, LocalCluster
    from distributed import as_completed as dask_completed

    cluster = None
    if dask_address in (None, "local"):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    else:
        try:
            client = Client(dask_address, timeout="30s")
        except OSError as exc:
            raise ConfigError(f"cannot reach the dask scheduler at {dask_address!r} ({exc})") from None
    run_id = uuid.uuid4().hex[:8]
    try:
        futures = [
            client.submit(writer.write_shard, t, image_root, out_dir, key=f"write_shard-{t.file}-{run_id}", **kwargs)
            for t in tasks
        ]
        for future in dask_completed(futures):
            yield future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _remove_leftovers(out_dir: Path, name: str) -> None:
    """Temp files of an interrupted run (never listed anywhere) are removed before writing again."""
    for tmp in out_dir.glob(f"{name}-*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
