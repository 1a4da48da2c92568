"""Loading tensors-only files (checkpoints, resume states) so that a bad file is a message, not a traceback."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import CheckpointError


def load_tensors_or_refuse(path: Path, fix: str) -> Any:
    """torch.load(weights_only=True), with every way a file can be unloadable turned into a CheckpointError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = f"it needs pickled code to load, which chex refuses ({str(exc).splitlines()[0][:200]})"
    except (EOFError, RuntimeError, OSError, ValueError) as exc:
        reason = f"it is empty or damaged ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})"
    raise CheckpointError(f"cannot load {path}: {reason}; {fix}")
