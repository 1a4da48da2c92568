"""Step (c) of sharding: merge the finished shards' sidecars into the shard set's index files.

Files (each rewritten atomically, temp name + rename):
- `index.parquet`: shard, index, n_samples, bytes, sha256; only shards whose tar + sidecar are verified.
- `quarantine.csv`: path, image_id, reason, shard; every input that could not be decoded.
- `manifest.parquet`: the sharded manifest rows plus shard, key, height, width, bit_depth, pixel_sha256, in shard
  order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.atomic import write_atomic, write_csv_atomic
from pipeline.shard.plan import ShardTask
from pipeline.shard.writer import ShardResult, WriteOptions, load_done
from pipeline.shard_format import INDEX_FILE, QUARANTINE_FILE

MANIFEST_FILE = "manifest.parquet"
INDEX_COLUMNS = ["shard", "index", "n_samples", "bytes", "sha256"]
QUARANTINE_COLUMNS = ["path", "image_id", "reason", "shard"]
SAMPLE_COLUMNS = ["shard", "key", "height", "width", "bit_depth", "pixel_sha256"]  # pixel_sha256: None in old shards


@dataclass
class IndexSummary:
    """What the index holds after `build_index`."""

    n_shards: int
    n_samples: int
    n_bytes: int
    quarantine: pd.DataFrame
    pending: list[str] = field(default_factory=list)  # planned shards not (yet) finished


def build_index(
    out_dir: str | Path,
    tasks: Sequence[ShardTask],
    manifest: pd.DataFrame | None = None,
    options: WriteOptions | None = None,
    *,
    results: dict[int, ShardResult] | None = None,
    verify: str = "size",
) -> IndexSummary:
    """Write index.parquet, quarantine.csv and manifest.parquet from the finished shards among `tasks`.

    `results` (by task index) are used as given; other tasks are looked up from their sidecars (so another
    machine's shards are merged too), checked against `options` (None: the options each was written with).
    `manifest` supplies the rows with their original dtypes (else the tasks' json rows are used).
    """
    out_dir = Path(out_dir)
    results = dict(results or {})
    finished: list[tuple[ShardTask, ShardResult]] = []
    pending: list[str] = []
    for task in tasks:
        result = results.get(task.index) or load_done(task, out_dir, options, verify=verify)
        if result is None:
            pending.append(task.file)
        else:
            finished.append((task, result))

    index = pd.DataFrame([r.record for _, r in finished], columns=INDEX_COLUMNS)
    index = index.astype({"index": "int64", "n_samples": "int64", "bytes": "int64"})
    quarantine = pd.DataFrame(
        [{**q, "shard": task.file} for task, r in finished for q in r.quarantine], columns=QUARANTINE_COLUMNS
    )
    samples = pd.DataFrame(
        [{**s, "shard": task.file} for task, r in finished for s in r.samples],
        columns=["image_id", *SAMPLE_COLUMNS],
    )
    write_atomic(
        out_dir / MANIFEST_FILE, lambda p: _sharded_manifest(samples, tasks, manifest).to_parquet(p, index=False)
    )
    write_csv_atomic(out_dir / QUARANTINE_FILE, quarantine)  # for people: no cell runs as a formula
    write_atomic(out_dir / INDEX_FILE, lambda p: index.to_parquet(p, index=False))
    return IndexSummary(
        n_shards=len(index),
        n_samples=int(index["n_samples"].sum()),
        n_bytes=int(index["bytes"].sum()),
        quarantine=quarantine,
        pending=pending,
    )


def _sharded_manifest(samples: pd.DataFrame, tasks: Sequence[ShardTask], manifest: pd.DataFrame | None) -> pd.DataFrame:
    if manifest is None:
        manifest = pd.DataFrame([row for task in tasks for row in task.rows])
    rows = manifest.assign(image_id=manifest["image_id"].astype(str)).drop(
        columns=[c for c in SAMPLE_COLUMNS if c in manifest.columns]
    )
    merged = samples.merge(rows, on="image_id", how="left", validate="one_to_one")
    ordered = [c for c in rows.columns] + SAMPLE_COLUMNS
    return merged[ordered].reset_index(drop=True)
