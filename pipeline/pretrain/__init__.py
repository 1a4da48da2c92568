"""Pretraining: DINOv2 self-distillation (DINO + iBOT + KoLeo) of a timm ViT, streamed from webdataset shards."""

from pipeline.pretrain.config import PretrainConfig, load_config
from pipeline.pretrain.train import TrainingDivergedError, pretrain

__all__ = ["PretrainConfig", "TrainingDivergedError", "load_config", "pretrain"]
