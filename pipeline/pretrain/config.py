"""The pretraining configuration: typed dataclasses, merged once from defaults + YAML preset + stage + overrides.

Defaults are the paper's recipe (DINOv2 as used by CheXFound; docs/architecture.md "Pretraining at CPU scale"):
DINO [CLS] loss 1.0, iBOT masked-patch loss 3.0 with its own head, KoLeo 0.1, teacher momentum 0.994 -> 1.0
(cosine), 2 global + 8 local crops, masks U(0.1, 0.5) on half the samples, AdamW base lr 2e-4 with 10 warm-up
epochs and cosine decay.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.errors import ConfigError

PRESETS_DIR = Path(__file__).parent / "presets"


@dataclass
class ModelConfig:
    """The ViT trained as student and teacher (fields of `pipeline.backbone.BackboneConfig`)."""

    backbone: str = "vit_large_patch16_chexfound"  # a `pipeline.backbone.PRESETS` name
    backbone_overrides: dict[str, Any] = field(default_factory=dict)  # BackboneConfig fields, e.g. depth
    drop_path_rate: float = 0.3  # student only; the teacher runs without drop path


@dataclass
class DinoConfig:
    loss_weight: float = 1.0
    n_prototypes: int = 65536
    bottleneck_dim: int = 256
    hidden_dim: int = 2048
    n_layers: int = 3
    koleo_loss_weight: float = 0.1


@dataclass
class IbotConfig:
    loss_weight: float = 3.0
    separate_head: bool = True
    mask_sample_probability: float = 0.5
    mask_ratio_min_max: tuple[float, float] = (0.1, 0.5)
    n_prototypes: int = 65536
    bottleneck_dim: int = 256
    hidden_dim: int = 2048
    n_layers: int = 3


@dataclass
class TeacherConfig:
    momentum_teacher: float = 0.994
    final_momentum_teacher: float = 1.0
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.07
    warmup_teacher_temp_epochs: float = 30
    student_temp: float = 0.1
    centering: Literal["softmax", "sinkhorn_knopp"] = "softmax"
    center_momentum: float = 0.9


@dataclass
class OptimConfig:
    epochs: float = 100
    base_lr: float = 2.0e-4
    scaling_rule: Literal["sqrt_wrt_1024", "linear_wrt_256", "none"] = "sqrt_wrt_1024"
    min_lr: float = 1.0e-6
    warmup_epochs: float = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    clip_grad: float = 3.0
    freeze_last_layer_epochs: float = 1
    patch_embed_lr_mult: float = 0.2
    layerwise_decay: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class CropsConfig:
    global_crops_size: int = 224
    local_crops_size: int = 96
    local_crops_number: int = 8
    global_crops_scale: tuple[float, float] = (0.32, 1.0)
    local_crops_scale: tuple[float, float] = (0.05, 0.32)
    hflip_prob: float = 0.5
    # Grey-scale photometric jitter: brightness and contrast only (no saturation/hue on a grey image).
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    blur_prob: tuple[float, float, float] = (1.0, 0.1, 0.5)  # global 1, global 2, local
    solarize_prob: float = 0.2  # global 2 only


@dataclass
class TrainConfig:
    batch_size_per_rank: int = 64
    epoch_length: int = 1250  # steps per "epoch" (DINOv2's OFFICIAL_EPOCH_LENGTH; the stream has no epochs)
    total_steps: int | None = None  # None: epochs x epoch_length; set: schedules span exactly this many steps
    max_steps: int | None = None  # stop after this step (e.g. to split a run into jobs); --resume continues
    seed: int = 0
    num_workers: int = 4
    shuffle_buffer: int = 1000
    checkpoint_every: int = 2500
    keep_checkpoints: int = 2
    log_every: int = 10
    device: str | None = None  # None: cuda when present, else cpu
    grad_scaler: bool = True  # used with fp16 autocast only


@dataclass
class PretrainConfig:
    name: str = "vitl16_chexfound"
    model: ModelConfig = field(default_factory=ModelConfig)
    dino: DinoConfig = field(default_factory=DinoConfig)
    ibot: IbotConfig = field(default_factory=IbotConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    crops: CropsConfig = field(default_factory=CropsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> dotted-key overrides

    @property
    def total_steps(self) -> int:
        if self.train.total_steps is not None:
            return int(self.train.total_steps)
        return max(1, math.ceil(self.optim.epochs * self.train.epoch_length))

    @property
    def steps_per_epoch(self) -> float:
        """Steps in one schedule epoch: epoch-valued options (warm-ups, freeze) scale with the run's length."""
        return self.total_steps / self.optim.epochs

    def lr(self, world_size: int) -> float:
        """Peak learning rate after the batch-size scaling rule."""
        batch = self.train.batch_size_per_rank * world_size
        if self.optim.scaling_rule == "sqrt_wrt_1024":
            return self.optim.base_lr * math.sqrt(batch / 1024)
        if self.optim.scaling_rule == "linear_wrt_256":
            return self.optim.base_lr * batch / 256
        return self.optim.base_lr

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> PretrainConfig:
        config = _build(cls, data, source)
        validate_ranges(config, source)
        return config


# dotted key -> (low, high, low inclusive, high inclusive); None: unbounded on that side
_RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "model.drop_path_rate": (0, 1, True, False),
    **{f"{h}.{k}": r for h in ("dino", "ibot") for k, r in (
        ("loss_weight", (0, None, True, True)), ("n_prototypes", (1, None, True, True)),
        ("bottleneck_dim", (1, None, True, True)), ("hidden_dim", (1, None, True, True)),
        ("n_layers", (1, None, True, True)),
    )},
    "dino.koleo_loss_weight": (0, None, True, True),
    "ibot.mask_sample_probability": (0, 1, True, True),
    "ibot.mask_ratio_min_max": (0, 1, True, True),
    "teacher.momentum_teacher": (0, 1, True, True),
    "teacher.final_momentum_teacher": (0, 1, True, True),
    "teacher.warmup_teacher_temp": (0, None, False, True),
    "teacher.teacher_temp": (0, None, False, True),
    "teacher.warmup_teacher_temp_epochs": (0, None, True, True),
    "teacher.student_temp": (0, None, False, True),
    "teacher.center_momentum": (0, 1, True, True),
    "optim.epochs": (0, None, False, True),
    "optim.base_lr": (0, None, False, True),
    "optim.min_lr": (0, None, True, True),
    "optim.warmup_epochs": (0, None, True, True),
    "optim.weight_decay": (0, None, True, True),
    "optim.weight_decay_end": (0, None, True, True),
    "optim.clip_grad": (0, None, True, True),
    "optim.freeze_last_layer_epochs": (0, None, True, True),
    "optim.patch_embed_lr_mult": (0, None, True, True),
    "optim.layerwise_decay": (0, 1, False, True),
    "optim.betas": (0, 1, True, False),
    "crops.global_crops_size": (1, None, True, True),
    "crops.local_crops_size": (1, None, True, True),
    "crops.local_crops_number": (0, None, True, True),
    "crops.global_crops_scale": (0, 1, False, True),
    "crops.local_crops_scale": (0, 1, False, True),
    "crops.hflip_prob": (0, 1, True, True),
    "crops.jitter_prob": (0, 1, True, True),
    "crops.brightness": (0, None, True, True),
    "crops.contrast": (0, None, True, True),
    "crops.blur_prob": (0, 1, True, True),
    "crops.solarize_prob": (0, 1, True, True),
    "train.batch_size_per_rank": (1, None, True, True),
    "train.epoch_length": (1, None, True, True),
    "train.total_steps": (1, None, True, True),
    "train.max_steps": (1, None, True, True),
    "train.num_workers": (0, None, True, True),
    "train.shuffle_buffer": (0, None, True, True),
    "train.checkpoint_every": (1, None, True, True),
    "train.keep_checkpoints": (1, None, True, True),
    "train.log_every": (1, None, True, True),
}  # fmt: skip
# BackboneConfig's whole-number fields and their least values (a patch of 0 pixels or a width of -4 cannot be built)
_BACKBONE_MINIMUMS = {"embed_dim": 1, "depth": 1, "num_heads": 1, "patch_size": 1, "img_size": 1,
                      "num_registers": 0, "mlp_hidden": 1}  # fmt: skip
_ORDERED_PAIRS = ("ibot.mask_ratio_min_max", "crops.global_crops_scale", "crops.local_crops_scale")


def validate_ranges(config: PretrainConfig, source: str = "config") -> None:
    """ConfigError naming the first setting outside its range (e.g. steps 0, a negative lr, a crop count < 0),
    so a run never starts, or "finishes" untrained, on a value that cannot be meant."""
    from pipeline.workspace import check_name

    check_name(config.name, "pretrain run")  # it becomes checkpoints/<name>/
    flat = _flatten(config.to_dict())
    for key, (low, high, low_in, high_in) in _RANGES.items():
        value = flat.get(key)
        for v in value if isinstance(value, list) else [value]:
            if v is None:
                continue
            bad = (low is not None and (v < low if low_in else v <= low)) or (
                high is not None and (v > high if high_in else v >= high)
            )
            if bad:
                lo = "" if low is None else f"{'>=' if low_in else '>'} {low:g}"
                hi = "" if high is None else f"{'<=' if high_in else '<'} {high:g}"
                allowed = " and ".join(filter(None, (lo, hi)))
                raise ConfigError(
                    f"pretrain setting {key} = {value!r} ({source} + --set) is out of range; it must be {allowed}"
                )
    for key, value in config.model.backbone_overrides.items():
        low = _BACKBONE_MINIMUMS.get(key)
        if low is not None and value is not None and (not isinstance(value, int) or value < low):
            raise ConfigError(
                f"pretrain setting model.backbone_overrides.{key} = {value!r} ({source} + --set) is out of range; "
                f"it must be a whole number >= {low}"
            )
    for key in _ORDERED_PAIRS:
        low_v, high_v = flat[key]
        if low_v > high_v:
            raise ConfigError(
                f"pretrain setting {key} = {flat[key]!r} ({source} + --set): the first value must not exceed the second"
            )


def load_config(
    preset_or_file: str | Path | None = None,
    overrides: list[str] | None = None,
    stage: str | None = None,
) -> PretrainConfig:
    """Defaults <- YAML (a preset name such as 'cpu_small' or a file) <- stage <- `key=value` overrides.

    Overrides use dotted keys (`optim.base_lr=1e-3`, `crops.local_crops_number=4`); values are read as YAML.
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if preset_or_file is not None:
        path = resolve_preset(preset_or_file)
        source = str(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"cannot parse pretrain config {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"pretrain config {path} must be a mapping of sections, got {type(data).__name__}")
    if stage is not None:
        stages = data.get("stages") or {}
        if stage not in stages:
            raise ConfigError(f"stage {stage!r} is not in {source}; its stages are {sorted(stages) or 'none'}")
        for key, value in (stages[stage] or {}).items():
            _set_dotted(data, key, value, f"stage {stage!r} of {source}")
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r} is not of the form section.key=value (e.g. optim.base_lr=1e-3)")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        _set_dotted(data, key.strip(), value, f"--set {item}")
    return PretrainConfig.from_dict(data, source)


def resolve_preset(preset_or_file: str | Path) -> Path:
    """A packaged preset by name ('cpu_small', 'vitl16_chexfound') or a path to a YAML file."""
    path = Path(preset_or_file)
    if path.is_file():
        return path
    packaged = PRESETS_DIR / f"{preset_or_file}.yaml"
    if packaged.is_file():
        return packaged
    names = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
    raise ConfigError(f"pretrain config {preset_or_file!r} is neither a file nor a preset; presets: {names}")


def config_differences(a: PretrainConfig, b: PretrainConfig, ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys whose values differ between two configs (for refusing to resume with another recipe)."""
    flat_a, flat_b = _flatten(a.to_dict()), _flatten(b.to_dict())
    return sorted(k for k in set(flat_a) | set(flat_b) if flat_a.get(k) != flat_b.get(k) and k not in ignore)


def _set_dotted(data: dict[str, Any], key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: {part!r} in {key!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} in {cls.__name__}; known keys: {sorted(names)}")
    kwargs = {name: _coerce(hints[name], value, f"{where}: {cls.__name__}.{name}") for name, value in data.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """`value` (from YAML or --set) checked and converted to the field's annotated type."""
    if dataclasses.is_dataclass(hint):
        return _build(hint, value or {}, where)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        return _coerce(next(a for a in args if a is not type(None)), value, where)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise ConfigError(f"{where} needs {len(args)} values, got {value!r}")
        return tuple(_coerce(a, v, where) for a, v in zip(args, value, strict=True))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint in (int, float):
        try:
            number = float(value) if isinstance(value, str) else value
        except ValueError:
            number = None
        if not isinstance(number, int | float) or isinstance(number, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if hint is int:
            if float(number) != int(number):
                raise ConfigError(f"{where} must be a whole number, got {value!r}")
            return int(number)
        return float(number)
    if hint is str:
        return str(value)
    if origin is dict and not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping, got {value!r}")
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "stages" and key != "backbone_overrides":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
