"""Where a probe run's files live: the folder, its file names and its label-fraction sub-folders.

results/<dataset>/<backbone>/<head>[@<tag>]/[label_fraction=<f>/]
    predictions.parquet      test image x output: score, label (the refit head)
    val_predictions.parquet  val image x output of the chosen lr's sweep head (F1 thresholds, moved as a rate)
    survival.parquet         test subject x endpoint: mean risk score, time, event (survival data sets)
    results.parquet          metric rows (pipeline.runs.evaluate_run)
    sweep.parquet            lr -> val macro AUROC, chosen
    head.pt                  the refit head's tensors
    attention/attention.npz  GLoRI maps of some test images
    run.json                 the RunRecord, written last: a folder is complete when it holds the current key

The folder names the configuration: `<head>/` holds the run at the head's default options and the default
probe settings; any other configuration lives beside it in `<head>@<tag>/`, the tag a readable list of what
differs (e.g. `glori@dim64-ffn128-ep3-1f0c2a`, cut at TAG_READABLE characters) and a hash of the whole
configuration (`config_tag`). Runs of different configurations never share a folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.workspace import Workspace

PREDICTIONS_FILE = "predictions.parquet"
VAL_PREDICTIONS_FILE = "val_predictions.parquet"
SURVIVAL_FILE = "survival.parquet"
RESULTS_FILE = "results.parquet"
SWEEP_FILE = "sweep.parquet"
HEAD_FILE = "head.pt"
RECORD_FILE = "run.json"
ATTENTION_DIR = "attention"
ATTENTION_FILE = "attention.npz"
PARTIAL_DIR = ".partial"
FRACTION_PREFIX = "label_fraction="
# Files whose presence marks a folder as a run folder (a probe's, or predictions a user evaluates); every
# registered task's tables do too (`marker_files`).
MARKER_FILES = (RECORD_FILE, RESULTS_FILE, PREDICTIONS_FILE, SURVIVAL_FILE)
CONFIG_SEPARATOR = "@"  # <head>@<tag>: a configuration other than the default
TAG_READABLE = 40  # characters of the readable part of a tag (the hash follows)
TAG_HASH = 6
# Short names of the probe settings in a tag (ProbeConfig.identity()'s fields; others keep their own name).
PROBE_SHORT = {
    "lrs": "lrs", "epochs": "ep", "batch_size": "bs", "weight_decay": "wd", "seed": "seed", "val_fraction": "val",
    "train_views": "views", "sweep": "sweep", "micro_batch": "mb", "selection": "sel", "seeds": "seeds",
    "cv_folds": "cv", "cv_repeats": "cvrep", "standardize": "std",
    "pooled_selection": "pool",
}  # fmt: skip


def marker_files() -> tuple[str, ...]:
    """MARKER_FILES and the tables of every registered task kind (pipeline/tasks/)."""
    from pipeline.tasks.run import table_files

    return tuple(dict.fromkeys([*MARKER_FILES, *table_files()]))


def config_tag(differences: list[tuple[str, object]], identity: object) -> str:
    """The folder tag of a configuration: '' when nothing differs from the defaults, else the differences
    (short name + value, '-'-joined, cut at TAG_READABLE characters) and a hash of the whole `identity`."""
    if not differences:
        return ""
    readable = ""
    for name, value in differences:
        item = _tag_item(name, value)
        if len(readable) + len(item) + 1 > TAG_READABLE:
            break
        readable = f"{readable}-{item}" if readable else item
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:TAG_HASH]
    return f"{readable}-{digest}" if readable else digest


def head_folder(head: str, tag: str = "") -> str:
    """The folder name of `head`'s runs of the configuration `tag` ('' = the default configuration)."""
    return f"{head}{CONFIG_SEPARATOR}{tag}" if tag else head


def split_head_folder(name: str) -> tuple[str, str]:
    """(head, tag) of a head folder name; tag '' for the default configuration."""
    head, _, tag = name.partition(CONFIG_SEPARATOR)
    return head, tag


def _tag_item(name: str, value: object) -> str:
    if isinstance(value, bool):
        text = name if value else f"no{name}"
    elif isinstance(value, list | tuple):
        text = f"{name}{len(value)}"  # e.g. the lrs of a sweep: their number (the hash holds the values)
    elif isinstance(value, float):
        text = f"{name}{value:g}"
    else:
        text = f"{name}{'auto' if value is None else value}"
    return re.sub(r"[^A-Za-z0-9.+]", "", text)


def fraction_folder(label_fraction: float) -> str | None:
    """The sub-folder name of a label-efficiency run (None for the full training set)."""
    return None if label_fraction >= 1.0 else f"{FRACTION_PREFIX}{label_fraction:g}"


def parse_fraction(name: str) -> float | None:
    """The label fraction a folder name stands for, None when it is not a label-fraction folder."""
    if not name.startswith(FRACTION_PREFIX):
        return None
    try:
        value = float(name.removeprefix(FRACTION_PREFIX))
    except ValueError:
        return None
    return value if 0.0 < value <= 1.0 and math.isfinite(value) else None


@dataclass(frozen=True)
class RunFolder:
    """Paths of one probe run folder."""

    root: Path

    @classmethod
    def of(
        cls, workspace: Workspace, dataset: str, backbone: str, head: str, label_fraction: float, tag: str = ""
    ) -> RunFolder:
        """The run folder of `head` on `dataset` with `backbone`'s features; `tag` names a configuration other
        than the default (`config_tag`)."""
        base = workspace.results_dir(dataset, backbone, head_folder(head, tag))
        sub = fraction_folder(label_fraction)
        return cls(base if sub is None else base / sub)

    def __truediv__(self, name: str) -> Path:
        return self.root / name

    @property
    def partial_dir(self) -> Path:
        """Per-epoch training checkpoints of an unfinished run."""
        return self.root / PARTIAL_DIR

    @property
    def attention_path(self) -> Path:
        return self.root / ATTENTION_DIR / ATTENTION_FILE

    def has(self, name: str) -> bool:
        return (self.root / name).is_file()

    def path_names(self) -> dict[str, str | None]:
        """dataset/backbone/head/label_fraction/config_tag as the folder names spell them (for folders without
        run.json)."""
        parts = list(self.root.parts)
        fraction = parse_fraction(parts[-1]) if parts else None
        if fraction is not None:
            parts.pop()
        names: dict[str, str | None] = dict(zip(("dataset", "backbone", "head"), parts[-3:], strict=False))
        head, tag = split_head_folder(names.get("head") or "")
        if names.get("head"):
            names["head"] = head
        return {**names, "label_fraction": None if fraction is None else str(fraction), "config_tag": tag}


def find_run_folders(root: Path) -> list[Path]:
    """Every run folder at or below `root` (folders holding one of `marker_files()`), sorted, resolved."""
    root = Path(root)
    if root.is_file():
        return [root.parent.resolve()]
    found = {p.parent.resolve() for name in marker_files() for p in root.rglob(name) if PARTIAL_DIR not in p.parts}
    return sorted(found)
