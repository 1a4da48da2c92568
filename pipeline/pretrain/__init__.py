"""Pretraining: DINOv2 self-distillation (DINO + iBOT + KoLeo) of a timm ViT, streamed from webdataset shards.

Names are imported lazily, so reading and checking a config (`load_config`) never loads torch: `chex pretrain`
tells a config error before the heavy imports.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PretrainConfig": "config",
    "load_config": "config",
    "TrainingDivergedError": "train",
    "pretrain": "train",
    "run_folder": "run_folder",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    return module if name == _EXPORTS[name] else getattr(module, name)
