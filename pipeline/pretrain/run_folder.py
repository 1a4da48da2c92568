"""The run folder `checkpoints/<name>/`: step checkpoints, resume state, the final checkpoint and the metrics log.

```
checkpoints/<name>/
    model.pt, config.json      final teacher backbone, chex checkpoint format (what `chex embed` loads)
    heads.pt                   final teacher DINO/iBOT heads (tensors only; used by --init-from)
    pretrain_config.yaml       the resolved recipe of the run
    metrics.jsonl              one line per logged step
    step_000500/               every `checkpoint_every` steps: model.pt + config.json + heads.pt + train_state.pt
```
A step folder is written under a temporary name and renamed when complete, so a kill never leaves a half
checkpoint that `--resume` would pick; only the newest `keep_checkpoints` step folders are kept.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from pipeline.safe_load import load_tensors_or_refuse

STEP_PATTERN = re.compile(r"^step_(\d{6,})$")
STATE_FILE = "train_state.pt"
HEADS_FILE = "heads.pt"
CONFIG_YAML = "pretrain_config.yaml"
METRICS_FILE = "metrics.jsonl"


def step_dir(out_dir: Path, step: int) -> Path:
    return out_dir / f"step_{step:06d}"


def step_dirs(out_dir: Path) -> list[tuple[int, Path]]:
    """Complete step folders (those holding a training state), oldest first."""
    if not out_dir.is_dir():
        return []
    found = []
    for path in out_dir.iterdir():
        match = STEP_PATTERN.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_step_dir(out_dir: Path) -> Path | None:
    found = step_dirs(out_dir)
    return found[-1][1] if found else None


def write_step_dir(out_dir: Path, step: int, write: Callable[[Path], None], keep: int) -> Path:
    """Fill a temporary folder with `write(folder)`, rename it to `step_XXXXXX`, prune older step folders."""
    target = step_dir(out_dir, step)
    tmp = out_dir / f".{target.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    for _, old in step_dirs(out_dir)[: max(0, len(step_dirs(out_dir)) - max(keep, 1))]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def save_tensors(obj: Any, path: Path) -> None:
    """torch.save through a temporary name (the object must hold only tensors and plain Python values)."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_tensors(path: Path) -> Any:
    """A tensors-only file of the run folder; CheckpointError naming it when it is empty, damaged or pickled code."""
    return load_tensors_or_refuse(path, "delete it (or the step folder holding it) and rerun")


def write_config(out_dir: Path, config_dict: dict[str, Any]) -> None:
    tmp = out_dir / f".{CONFIG_YAML}.tmp"
    tmp.write_text(yaml.safe_dump(config_dict, sort_keys=False))
    os.replace(tmp, out_dir / CONFIG_YAML)


class MetricsLog:
    """Append-only JSONL of logged steps; on resume, lines past the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = path
        if resume_step is not None and path.is_file():
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= resume_step]
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, path)
        elif resume_step is None:
            path.unlink(missing_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
