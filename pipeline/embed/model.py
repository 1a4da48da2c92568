"""Which backbone to embed with: a checkpoint (any supported layout) or a built-in preset at random init."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from timm.models.vision_transformer import VisionTransformer

from pipeline.backbone import BackboneConfig, build_backbone, load_backbone, preset
from pipeline.errors import ConfigError


@dataclass(frozen=True)
class BackboneSpec:
    """A picklable description of the backbone, so dask workers can rebuild it."""

    checkpoint: str | None = None
    random_init: str | None = None
    seed: int = 0
    image_size: int | None = None
    num_heads: int | None = None

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.random_init is None):
            raise ConfigError("give exactly one of --checkpoint PATH or --random-init PRESET")

    def load(self) -> tuple[VisionTransformer, BackboneConfig, str]:
        """(model in eval mode, config, sha256 identifying the weights)."""
        if self.checkpoint is not None:
            return load_backbone(self.checkpoint, image_size=self.image_size, num_heads=self.num_heads)
        config = preset(self.random_init, img_size=self.image_size, num_heads=self.num_heads)
        torch.manual_seed(self.seed)
        model = build_backbone(config).eval()
        return model, config, state_dict_sha256(model)

    @property
    def provenance(self) -> str:
        return str(self.checkpoint) if self.checkpoint else f"random-init:{self.random_init}:seed={self.seed}"

    def default_name(self) -> str:
        """Store folder name: the checkpoint's folder name (or `<preset>-random`)."""
        if self.random_init:
            return f"{self.random_init}-random"
        path = Path(self.checkpoint)
        return path.name if path.is_dir() else path.parent.name or path.stem


def state_dict_sha256(model: torch.nn.Module) -> str:
    """sha256 over names and bytes of every tensor (identifies random-init weights)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
