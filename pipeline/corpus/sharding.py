"""Shard a corpus manifest source-balanced: the interleaved row order handed to `pipeline.shard`'s writer.

Everything long-running (bounded memory, resume after a kill, worker processes, dask.distributed with each
worker writing disjoint shards and one index merged at the end) is `shard_dataset`'s; this module only
supplies the image root (from the corpus sidecar) and the row order.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.corpus.build import read_corpus_root
from pipeline.corpus.interleave import interleaved_order
from pipeline.manifest import read_manifest
from pipeline.shard.dataset import ShardSummary, shard_dataset


def shard_corpus(
    corpus: str | Path,
    out_dir: str | Path,
    name: str | None = None,
    *,
    seed: int = 0,
    image_root: str | Path | None = None,
    **shard_options,
) -> ShardSummary:
    """Write the corpus into tar shards in source-interleaved order (seeded shuffle within each source).

    `image_root` defaults to the root recorded by `chex corpus build`; `shard_options` go to `shard_dataset`
    (target_shard_bytes, samples_per_shard, max_side, workers, executor, dask_address, progress, ...).
    """
    corpus = Path(corpus)
    frame = read_manifest(corpus)
    root = Path(image_root) if image_root is not None else read_corpus_root(corpus)
    order = interleaved_order(frame["source"].to_numpy(), seed=seed)
    name = name or corpus.name.removesuffix(".parquet")
    return shard_dataset(frame, root, out_dir, name, order=order.tolist(), **shard_options)
