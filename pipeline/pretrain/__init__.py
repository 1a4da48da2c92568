"""Pretraining: DINOv2 self-distillation (DINO + iBOT + KoLeo) of a timm ViT, streamed from webdataset shards.

Names are imported lazily (`pipeline.lazy`), so reading and checking a config (`load_config`) never loads torch:
`chex pretrain` tells a config error before the heavy imports.
"""

from __future__ import annotations

from pipeline.lazy import lazy_exports

_EXPORTS = {
    "PretrainConfig": ".config",
    "load_config": ".config",
    "TrainingDivergedError": ".train",
    "pretrain": ".train",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
