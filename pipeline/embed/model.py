"""Which backbone to embed with: a checkpoint (any supported layout) or a built-in preset at random init."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.backbone import build_backbone, preset
from pipeline.backbone.families._vit import vit_backbone
from pipeline.backbone.interface import Backbone
from pipeline.backbone.registry import open_backbone
from pipeline.errors import ConfigError


@dataclass(frozen=True)
class BackboneSpec:
    """A picklable description of the backbone, so dask workers can rebuild it."""

    checkpoint: str | None = None
    random_init: str | None = None
    seed: int = 0
    image_size: int | None = None
    num_heads: int | None = None
    family: str | None = None  # None: recognised from the files

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.random_init is None):
            raise ConfigError("give exactly one of --checkpoint PATH or --random-init PRESET")

    def load(self) -> Backbone:
        """The backbone in eval mode (its family, preprocessing, token interface and weights sha256)."""
        if self.checkpoint is not None:
            return open_backbone(self.checkpoint, self.image_size, self.num_heads, family=self.family)
        config = preset(self.random_init, img_size=self.image_size, num_heads=self.num_heads)
        torch.manual_seed(self.seed)
        model = build_backbone(config)
        sha = state_dict_sha256(model)
        return vit_backbone("chex", model.state_dict(), config, sha, f"random-init:{self.random_init}")

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
