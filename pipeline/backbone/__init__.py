"""Backbones: build a timm ViT from a small config, load chex/DINOv2/CheXFound/timm/MAE weights, take tokens."""

from pipeline.backbone.build import build_backbone
from pipeline.backbone.checkpoint import file_sha256, load_backbone, save_checkpoint
from pipeline.backbone.config import PRESETS, BackboneConfig, preset
from pipeline.backbone.tokens import last_layer_tokens

__all__ = [
    "PRESETS",
    "BackboneConfig",
    "build_backbone",
    "file_sha256",
    "last_layer_tokens",
    "load_backbone",
    "preset",
    "save_checkpoint",
]
