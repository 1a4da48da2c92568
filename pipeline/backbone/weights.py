"""Reading a weights file without running pickled code (`torch.load(weights_only=True)` or safetensors)."""

from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path

import torch

from pipeline.backbone.converters import StateDict, unwrap
from pipeline.errors import CheckpointError


def _numpy_scalar_globals() -> list:
    """What unpickling a numpy scalar (e.g. EVA-X's saved metric) needs: the scalar constructor, `numpy.dtype`
    and the concrete dtype classes. Plain data: no code runs beyond building the number."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType") and n != "StringDType"]
    return [core.multiarray.scalar, np.dtype, *dtypes]


# Plain data that training scripts save beside the weights, allowed through weights_only loading:
# MAE's argparse.Namespace of arguments, numpy scalars (EVA-X's .pt files).
SAFE_GLOBALS: list = [argparse.Namespace, *_numpy_scalar_globals()]
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def read_weights(path: Path) -> StateDict:
    """The flat tensor dict in a weights file, loaded without running pickled code."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} needs pickled code to load, which chex refuses (torch.load weights_only=True): "
            f"{first_line(exc)}. "
            "Re-save it as a tensors-only state dict (torch.save(model.state_dict(), path)) from a trusted environment."
        ) from None
    except (OSError, RuntimeError, EOFError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {first_line(exc)}") from None
    return unwrap(obj, source=str(path))


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, without terminal colour codes."""
    text = _ANSI.sub("", str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__
