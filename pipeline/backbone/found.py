"""What a checkpoint path holds, described before anything heavy is imported.

`inspect_path` lists a folder's files and parses its small JSON configs (config.json, preprocessor_config.json,
open_clip_config.json) with the standard library only; the weights' keys are read on demand (`Found.keys`),
which imports torch. Families (pipeline/backbone/families/) recognise themselves from this, and an unrecognised
path is described in words ("a transformers CLIPModel folder", "a state dict with keys visual.trunk.*").
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import CheckpointError

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
# Weight files a release folder names by convention, preferred first (chex, transformers, timm, open_clip).
_NAMED_WEIGHTS = (
    "model.pt",
    "model.safetensors",
    "pytorch_model.bin",
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
)
_JSON_FILES = ("config.json", "preprocessor_config.json", "open_clip_config.json")


@dataclass
class Found:
    """A checkpoint path: the weights file, the folder it sits in (if given one) and that folder's JSON configs."""

    path: Path
    weights: Path
    folder: Path | None
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    _state: dict | None = field(default=None, repr=False)

    def config(self, name: str = "config.json") -> dict[str, Any] | None:
        return self.configs.get(name)

    def state_dict(self) -> dict:
        """The flat tensor dict in the weights file (read once, without running pickled code)."""
        if self._state is None:
            from pipeline.backbone.weights import read_weights

            self._state = read_weights(self.weights)
        return self._state

    def keys(self) -> list[str]:
        return list(self.state_dict())

    def describe(self, with_keys: bool = True) -> str:
        """What this path looks like, in words (for messages about files chex does not recognise)."""
        cfg = self.config() or {}
        if "open_clip_config.json" in self.configs:
            return f"an open_clip hf-hub folder ({self.folder})"
        if cfg.get("architectures") or cfg.get("model_type"):
            arch = ", ".join(cfg.get("architectures") or []) or cfg.get("model_type")
            return f"a transformers {arch} folder ({self.folder})"
        if "architecture" in cfg and "pretrained_cfg" in cfg:
            return f"a timm save_for_hf folder of {cfg['architecture']!r} ({self.folder})"
        if not with_keys:
            return f"a weights file {self.weights}"
        return f"a state dict with keys {key_summary(self.keys())} ({self.weights})"


def key_summary(keys: list[str], n: int = 6) -> str:
    """The most common two-level key prefixes, e.g. 'visual.trunk.*, text.transformer.*'."""
    prefixes = Counter(".".join(k.split(".")[:2]) + (".*" if k.count(".") >= 2 else "") for k in keys)
    common = [p for p, _ in prefixes.most_common(n)]
    return ", ".join(common) + (f", ... ({len(prefixes) - n} more prefixes)" if len(prefixes) > n else "")


def inspect_path(path: str | Path) -> Found:
    """The weights file and configs at `path` (a file, or a release folder); CheckpointError when none."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_dir():
        return Found(path, path, None, _read_configs(path.parent, only_chex=True))
    configs = _read_configs(path)
    named = [path / n for n in _NAMED_WEIGHTS if (path / n).is_file()]
    if named:
        return Found(path, named[0], path, configs)
    found = sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if len(found) != 1:
        raise CheckpointError(
            f"checkpoint folder {path} holds {len(found)} weight files {[p.name for p in found]}; expected one of "
            f"{list(_NAMED_WEIGHTS)} or exactly one file ending in {WEIGHT_SUFFIXES}: pass the file"
        )
    return Found(path, found[0], path, configs)


def _read_configs(folder: Path, only_chex: bool = False) -> dict[str, dict[str, Any]]:
    """The folder's JSON configs by file name. Beside a single weights file only a chex config.json counts:
    a foreign one next to it says nothing about that file."""
    out: dict[str, dict[str, Any]] = {}
    for name in ("config.json",) if only_chex else _JSON_FILES:
        p = folder / name
        if not p.is_file():
            continue
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read {p}: {exc}") from None
        if isinstance(data, dict):
            out[name] = data
    if only_chex and "config.json" in out and not is_chex_config(out["config.json"]):
        del out["config.json"]
    return out


def is_chex_config(cfg: dict[str, Any]) -> bool:
    """Whether a config.json is chex's own sidecar (BackboneConfig fields only, `arch` 'vit')."""
    import dataclasses

    from pipeline.backbone.config import BackboneConfig

    known = {f.name for f in dataclasses.fields(BackboneConfig)}
    return bool(cfg) and set(cfg) <= known and cfg.get("arch", "vit") == "vit"
