"""The backbone's architecture as a small typed config, plus built-in presets for random-init backbones."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FFN_TYPES = ("mlp", "swiglufused")


@dataclass(frozen=True)
class BackboneConfig:
    """A timm ViT described by the few numbers that matter for loading weights and embedding images.

    `mlp_hidden` is the ffn hidden width (for 'swiglufused' the width after the gate, as DINOv2's
    `w3` input); None means the usual default (4·D for 'mlp', DINOv2's 2/3·4·D rounded up to 8 for SwiGLU).
    Register tokens and the class token never overlap the positional embedding (DINOv2 layout).
    """

    arch: str = "vit"
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    patch_size: int = 16
    img_size: int = 224
    num_registers: int = 0
    layer_scale: float | None = None
    ffn: Literal["mlp", "swiglufused"] = "mlp"
    mlp_hidden: int | None = None
    qkv_bias: bool = True
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)

    def __post_init__(self) -> None:
        if self.ffn not in FFN_TYPES:
            raise ConfigError(f"backbone ffn {self.ffn!r} is not one of {FFN_TYPES}")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"backbone embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.img_size % self.patch_size:
            raise ConfigError(f"backbone img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def n_patches(self) -> int:
        return self.grid_size**2

    @property
    def ffn_hidden(self) -> int:
        """Hidden width of the ffn (after the SwiGLU gate)."""
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        if self.ffn == "swiglufused":
            return (int(4 * self.embed_dim * 2 / 3) + 7) // 8 * 8
        return 4 * self.embed_dim

    def replace(self, **changes: Any) -> BackboneConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackboneConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown backbone config keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> BackboneConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read backbone config {path}: {exc}") from exc
        return cls.from_dict(data)


PRESETS: dict[str, BackboneConfig] = {
    "vit_tiny_patch16": BackboneConfig(embed_dim=192, depth=12, num_heads=3),
    "vit_small_patch16": BackboneConfig(embed_dim=384, depth=12, num_heads=6),
    "vit_base_patch16": BackboneConfig(embed_dim=768, depth=12, num_heads=12),
    "vit_large_patch16": BackboneConfig(embed_dim=1024, depth=24, num_heads=16),
    "vit_small_patch16_reg4_swiglu": BackboneConfig(
        embed_dim=384, depth=12, num_heads=6, num_registers=4, layer_scale=1e-5, ffn="swiglufused"
    ),
    # CheXFound: ViT-L/16, 4 registers, fused SwiGLU, layer scale 1e-5, 512 px.
    "vit_large_patch16_chexfound": BackboneConfig(
        embed_dim=1024,
        depth=24,
        num_heads=16,
        patch_size=16,
        img_size=512,
        num_registers=4,
        layer_scale=1e-5,
        ffn="swiglufused",
    ),
}


def preset(name: str, **overrides: Any) -> BackboneConfig:
    """A built-in architecture by name (e.g. 'vit_small_patch16'), with field overrides such as img_size."""
    if name not in PRESETS:
        raise ConfigError(f"unknown backbone preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name].replace(**{k: v for k, v in overrides.items() if v is not None})
