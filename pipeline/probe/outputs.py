"""A probe run's folder (DESIGN.md "Probe outputs") and its atomic writers.

results/<dataset>/<backbone>/<head>/[label_fraction=<f>/]
    predictions.parquet  sweep.parquet  results.parquet  [survival.parquet]  head.pt  run.json  [attention/]
    val_predictions.parquet  (the chosen lr's sweep head on the val split: F1/sensitivity thresholds)

Every file is written to a temporary name and renamed when complete; run.json is written last and names the
run's configuration key, so a folder is complete exactly when its run.json holds the current key.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline.workspace import Workspace

RUN_FILES = ("predictions.parquet", "sweep.parquet", "results.parquet", "head.pt", "run.json")


@dataclass(frozen=True)
class RunFolder:
    """Paths of one probe run."""

    root: Path

    @classmethod
    def of(cls, workspace: Workspace, dataset: str, backbone: str, head: str, label_fraction: float) -> RunFolder:
        base = workspace.results_dir(dataset, backbone, head)
        return cls(base if label_fraction >= 1.0 else base / f"label_fraction={label_fraction:g}")

    def __truediv__(self, name: str) -> Path:
        return self.root / name

    @property
    def partial_dir(self) -> Path:
        """Per-epoch training checkpoints of an unfinished run."""
        return self.root / ".partial"

    def read_run(self) -> dict[str, Any] | None:
        path = self / "run.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def is_complete(self, key: str) -> bool:
        """True when run.json holds `key` and every output file it lists is present."""
        run = self.read_run()
        if not run or run.get("key") != key:
            return False
        return all((self / name).is_file() for name in run.get("files", RUN_FILES))


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    frame.reset_index(drop=True).to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def write_json(data: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_jsonable))
    tmp.replace(path)
    return path


def write_tensors(state: dict[str, torch.Tensor], path: Path) -> Path:
    """A tensors-only state dict (loadable with `torch.load(..., weights_only=True)`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, tmp)
    tmp.replace(path)
    return path


def write_attention(path: Path, image_ids: list[str], outputs: list[str], maps: np.ndarray, scores: np.ndarray) -> Path:
    """attention.npz: image_id (N,), output (K,), attention (N, K, P) averaged over attention heads,
    grid (rows, cols) of the patch layout when square, score (N, K)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    side = round(maps.shape[-1] ** 0.5)
    grid = np.array([side, side] if side * side == maps.shape[-1] else [1, maps.shape[-1]])
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}.npz")
    np.savez_compressed(
        tmp, image_id=np.array(image_ids), output=np.array(outputs), attention=maps.astype(np.float32), grid=grid,
        score=scores.astype(np.float32),
    )  # fmt: skip
    tmp.replace(path)
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
