"""Backbones as an interface: families (pipeline/backbone/families/) recognise their files, build the model,
convert the weights strictly, declare their preprocessing and yield tokens (`interface.Backbone`).

Names resolve lazily (PEP 562), so recognising files and reporting argument errors need no torch import.
"""

from __future__ import annotations

from pipeline.lazy import lazy_exports

_EXPORTS = {
    "PRESETS": "pipeline.backbone.config",
    "BackboneConfig": "pipeline.backbone.config",
    "preset": "pipeline.backbone.config",
    "build_backbone": "pipeline.backbone.build",
    "file_sha256": "pipeline.backbone.checkpoint",
    "load_backbone": "pipeline.backbone.checkpoint",
    "save_checkpoint": "pipeline.backbone.checkpoint",
    "last_layer_tokens": "pipeline.backbone.tokens",
    "Backbone": "pipeline.backbone.interface",
    "open_backbone": "pipeline.backbone.registry",
    "all_families": "pipeline.backbone.registry",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
