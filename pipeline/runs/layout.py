"""Where a probe run's files live: the folder, its file names and its label-fraction sub-folders.

results/<dataset>/<backbone>/<head>/[label_fraction=<f>/]
    predictions.parquet      test image x output: score, label (the refit head)
    val_predictions.parquet  val image x output of the chosen lr's sweep head (F1 thresholds, moved as a rate)
    survival.parquet         test subject x endpoint: mean risk score, time, event (survival data sets)
    results.parquet          metric rows (pipeline.runs.evaluate_run)
    sweep.parquet            lr -> val macro AUROC, chosen
    head.pt                  the refit head's tensors
    attention/attention.npz  GLoRI maps of some test images
    run.json                 the RunRecord, written last: a folder is complete when it holds the current key
"""

from __future__ import annotations

import math
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
# Files whose presence marks a folder as a run folder (a probe's, or predictions a user evaluates).
MARKER_FILES = (RECORD_FILE, RESULTS_FILE, PREDICTIONS_FILE, SURVIVAL_FILE)


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
    def of(cls, workspace: Workspace, dataset: str, backbone: str, head: str, label_fraction: float) -> RunFolder:
        base = workspace.results_dir(dataset, backbone, head)
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
        """dataset/backbone/head/label_fraction as the folder names spell them (for folders without run.json)."""
        parts = list(self.root.parts)
        fraction = parse_fraction(parts[-1]) if parts else None
        if fraction is not None:
            parts.pop()
        names = dict(zip(("dataset", "backbone", "head"), parts[-3:], strict=False))
        return {**names, "label_fraction": None if fraction is None else str(fraction)}


def find_run_folders(root: Path) -> list[Path]:
    """Every run folder at or below `root` (folders holding one of MARKER_FILES), sorted, resolved."""
    root = Path(root)
    if root.is_file():
        return [root.parent.resolve()]
    found = {p.parent.resolve() for name in MARKER_FILES for p in root.rglob(name) if PARTIAL_DIR not in p.parts}
    return sorted(found)
