"""Atomic writers for the files of a run folder (pipeline.atomic: temporary name, fsync, rename)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.atomic import write_atomic


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """`frame` (index dropped) as Parquet, or as CSV when `path` ends in .csv."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = frame.reset_index(drop=True)
    if path.suffix == ".csv":
        return write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False))
    return write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_tensors(state: dict[str, torch.Tensor], path: Path) -> Path:
    """A tensors-only state dict (loadable with `torch.load(..., weights_only=True)`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle: torch names the archive after a path, and tmp names hold a pid
            torch.save(tensors, handle)

    return write_atomic(path, write)


def write_attention(path: Path, image_ids: list[str], outputs: list[str], maps: np.ndarray, scores: np.ndarray) -> Path:
    """attention.npz: image_id (N,), output (K,), attention (N, K, P) averaged over attention heads,
    grid (rows, cols) of the patch layout when square, score (N, K)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    side = round(maps.shape[-1] ** 0.5)
    grid = np.array([side, side] if side * side == maps.shape[-1] else [1, maps.shape[-1]])

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle, so numpy does not append .npz to the temporary name
            np.savez_compressed(
                handle, image_id=np.array(image_ids), output=np.array(outputs), attention=maps.astype(np.float32),
                grid=grid, score=scores.astype(np.float32),
            )  # fmt: skip

    return write_atomic(path, write)
