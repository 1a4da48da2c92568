"""The shard stage: images + manifest -> webdataset tar shards (docs/architecture.md, "Contracts": shards).

Three separable steps, so a corpus of a million images can be sharded across machines:
`plan_shards` (rows -> numbered shards), `write_shard` (one shard, independently, crash-safe) and
`build_index` (sidecars -> index.parquet, quarantine.csv, manifest.parquet); `shard_dataset` runs all three.
Readers: `shard_paths`, `iter_samples`, `training_stream`.

Names are imported lazily, so a worker process that only writes shards never imports torch/webdataset.
"""

from __future__ import annotations

from pipeline.lazy import lazy_exports

_EXPORTS = {
    "ShardSummary": ".dataset",
    "shard_dataset": ".dataset",
    "MANIFEST_FILE": ".index",
    "IndexSummary": ".index",
    "build_index": ".index",
    "ShardTask": ".plan",
    "plan_shards": ".plan",
    "read_quarantine": ".quarantine",
    "Sample": ".reader",
    "iter_samples": ".reader",
    "read_index": ".reader",
    "shard_paths": ".reader",
    "training_stream": ".reader",
    "ShardResult": ".writer",
    "WriteOptions": ".writer",
    "load_done": ".writer",
    "write_shard": ".writer",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
