"""Atomic writers for the files of a run folder (pipeline.atomic: temporary name, fsync, rename)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.atomic import write_atomic, write_csv_atomic
from pipeline.errors import ConfigError

if TYPE_CHECKING:
    import torch


def read_table(path: Path, text_as_categories: bool = False) -> pd.DataFrame | None:
    """A run's Parquet table, or None when the file is absent; ConfigError naming a file that is not Parquet.

    `text_as_categories` reads every text column as a pandas Categorical, one column at a time: a predictions
    table of 200k images x 40 findings is 8M rows, whose text as Python strings (and Arrow's buffers, which its
    allocator keeps) would take ~1 GB; as codes it is ~200 MB (benchmarks/bench_load.py)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        return None
    try:
        if not text_as_categories:
            return pd.read_parquet(path)
        schema = pq.read_schema(path)
        text = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
        file = pq.ParquetFile(path, read_dictionary=text)
        columns = {}
        for name in schema.names:
            columns[name] = file.read(columns=[name]).column(0).to_pandas()
            pa.default_memory_pool().release_unused()  # hand the column's read buffers back to the OS
        return pd.DataFrame(columns, columns=schema.names)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise ConfigError(f"cannot read {path} as Parquet: {exc}") from exc


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """`frame` (index dropped) as Parquet, or as CSV when `path` ends in .csv."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = frame.reset_index(drop=True)
    if path.suffix == ".csv":
        return write_csv_atomic(path, frame)  # text cells escaped against formula injection
    return write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_tensors(state: dict[str, torch.Tensor], path: Path) -> Path:
    """A tensors-only state dict (loadable with `torch.load(..., weights_only=True)`)."""
    import torch  # here, not at import: `chex stats` reads run tables without torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle: torch names the archive after a path, and tmp names hold a pid
            torch.save(tensors, handle)

    return write_atomic(path, write)


def write_attention(
    path: Path, image_ids: list[str], outputs: list[str], maps: np.ndarray, scores: np.ndarray, grid=None
) -> Path:
    """attention.npz: image_id (N,), output (K,), attention (N, K, P) averaged over attention heads,
    grid (rows, cols) of the patch layout (the store's `grid`; when not given: square, else 1 x P), score (N, K)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if grid is None:
        side = round(maps.shape[-1] ** 0.5)
        grid = [side, side] if side * side == maps.shape[-1] else [1, maps.shape[-1]]
    grid = np.array([int(g) for g in grid])

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle, so numpy does not append .npz to the temporary name
            np.savez_compressed(
                handle, image_id=np.array(image_ids), output=np.array(outputs), attention=maps.astype(np.float32),
                grid=grid, score=scores.astype(np.float32),
            )  # fmt: skip

    return write_atomic(path, write)
