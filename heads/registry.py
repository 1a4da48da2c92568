"""Heads declare themselves here: name, class, options (with defaults), and what they can do.

This module imports no torch, so the CLI can build its head flags without loading the heads. A spec names
its class by module and attribute; `HeadSpec.load()` imports it. Adding a head is one new file in heads/
(the module) plus one `register(HeadSpec(...))` line below; the probe CLI's flags, the demo's options, the
probe's validation and the run key (which hashes `HeadSpec.config(...)` alone) follow from the spec.
tests/heads/test_registry.py checks each spec against its class's keyword defaults.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Value = bool | int | float | str


class HeadOptionError(ValueError):
    """A head option is unknown or out of range; `option`, `value` and `reason` say which and why."""

    def __init__(self, head: str, option: str, value: object, reason: str) -> None:
        super().__init__(f"{head} option {option}={value!r}: {reason}")
        self.head, self.option, self.value, self.reason = head, option, value, reason


@dataclass(frozen=True)
class HeadOption:
    """One keyword argument of a head's class: its default, a help line, its CLI flag (without dashes;
    default '<head>-<name>') and its short name in run-folder tags and report labels (default: the name)."""

    name: str
    default: Value
    help: str
    flag: str | None = None
    short: str | None = None


@dataclass(frozen=True)
class HeadSpec:
    """A head: `module:attr` of its class, its options, whether it reads patch tokens (always, never, or when a
    boolean option is on), whether it returns attention maps, and a range check of option values."""

    name: str
    target: str  # "heads.linear:LinearHead"
    options: tuple[HeadOption, ...] = ()
    needs_patch: bool | str = False  # True/False, or the name of a boolean option that switches patches on
    has_attention: bool = False
    check: Callable[[dict[str, Any]], list[tuple[str, str]]] | None = None  # -> [(option, reason)]
    # what the head outputs: "vector" (B, K) logits, or "map" (B, K, h, w) logits on its grid; a task kind asks for
    # one (pipeline/tasks/base.py `head_output`), and the probe refuses a head of the other
    output: str = "vector"
    # the lr grid of the head's sweep when the probe is given none (empty: the paper's, ProbeConfig's default)
    lrs: tuple[float, ...] = ()

    def load(self) -> type:
        module, attr = self.target.split(":")
        return getattr(importlib.import_module(module), attr)

    def flag(self, option: HeadOption) -> str:
        return option.flag or f"{self.name}-{option.name.replace('_', '-')}"

    def shorts(self) -> dict[str, str]:
        """option name -> its short name (run-folder tags, report labels)."""
        return {o.name: o.short or o.name for o in self.options}

    def resolve(self, given: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every declared option with its value (given, else default), in declared order; HeadOptionError on an
        unknown option, a value of the wrong type, or one the spec's check refuses."""
        given = dict(given or {})
        known = {o.name: o for o in self.options}
        for name in given:
            if name not in known:
                raise HeadOptionError(self.name, name, given[name], f"unknown; {self.name} takes {sorted(known)}")
        values: dict[str, Any] = {}
        for option in self.options:
            value = given.get(option.name, option.default)
            values[option.name] = _coerce(self.name, option, value)
        for name, reason in self.check(values) if self.check else []:
            raise HeadOptionError(self.name, name, values[name], reason)
        return values

    def config(self, given: dict[str, Any] | None = None) -> dict[str, Any]:
        """The head's identity: its name and every option's value (what a run key hashes)."""
        return {"name": self.name, **self.resolve(given)}

    def uses_patch(self, options: dict[str, Any]) -> bool:
        if isinstance(self.needs_patch, str):
            return bool(self.resolve(options)[self.needs_patch])
        return bool(self.needs_patch)


_REGISTRY: dict[str, HeadSpec] = {}


def register(spec: HeadSpec) -> HeadSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"head {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def head_spec(name: str) -> HeadSpec:
    """The spec of a registered head; KeyError listing the known heads otherwise."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown head {name!r}; known heads: {', '.join(head_names())}")
    return _REGISTRY[name]


def head_names() -> list[str]:
    return list(_REGISTRY)


def head_specs() -> list[HeadSpec]:
    return list(_REGISTRY.values())


def _coerce(head: str, option: HeadOption, value: Any) -> Value:
    kind = type(option.default)
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif isinstance(value, str):
        return value
    raise HeadOptionError(head, option.name, value, f"expected {kind.__name__}")


def _glori_check(values: dict[str, Any]) -> list[tuple[str, str]]:
    problems = []
    if values["embed_dim"] < values["num_heads"] or values["embed_dim"] % values["num_heads"]:
        problems.append(("embed_dim", f"the width must be a positive multiple of the {values['num_heads']} heads"))
    if values["ffn_dim"] < 1:
        problems.append(("ffn_dim", "the feed-forward width must be positive"))
    if not 0.0 <= values["dropout"] < 1.0:
        problems.append(("dropout", "must be in [0, 1)"))
    return problems


def _mlp_check(values: dict[str, Any]) -> list[tuple[str, str]]:
    problems = []
    if values["hidden"] < 1:
        problems.append(("hidden", "must be at least 1"))
    if not 0.0 <= values["dropout"] < 1.0:
        problems.append(("dropout", "must be in [0, 1)"))
    if not 0.0 <= values["label_smoothing"] < 1.0:
        problems.append(("label_smoothing", "must be in [0, 1)"))
    return problems


register(
    HeadSpec(
        "linear",
        "heads.linear:LinearHead",
        options=(HeadOption("avgpool", False, "append the mean patch token to the CLS tokens", flag="avgpool"),),
        needs_patch="avgpool",
    )
)
register(
    HeadSpec(
        "glori",
        "heads.glori:GloriHead",
        options=(
            HeadOption("embed_dim", 768, "decoder width (CheXFound: 768)", flag="glori-dim", short="dim"),
            HeadOption("num_heads", 8, "attention heads of the decoder", short="heads"),
            HeadOption(
                "ffn_dim", 2048, "decoder feed-forward width (CheXFound: 2048)", flag="glori-ffn-dim", short="ffn"
            ),
            HeadOption("dropout", 0.1, "dropout of the decoder", short="drop"),
            HeadOption(
                "train_queries",
                False,
                "train the queries (CheXFound freezes them)",
                flag="train-queries",
                short="trainq",
            ),
        ),
        needs_patch=True,
        has_attention=True,
        check=_glori_check,
    )
)
register(
    HeadSpec(
        "mlp",
        "heads.mlp:MlpHead",
        options=(
            HeadOption("hidden", 512, "hidden width"),
            HeadOption("dropout", 0.1, "dropout after the hidden layer", short="drop"),
            HeadOption("label_smoothing", 0.1, "binary label smoothing of the loss", short="smooth"),
        ),
        check=_mlp_check,
    )
)


def _decoder_check(values: dict[str, Any]) -> list[tuple[str, str]]:
    return [("width", "must be a positive multiple of 4")] if values["width"] < 4 or values["width"] % 4 else []


# Segmentation heads train on (B, K, h, w) maps, with larger steps than the paper's classification grid
# (1e-5..5e-3): on the small demo's stores the decoder chose 1e-2 or 1e-1 and the linear head 1e-1 or more (1e-3
# never: left out); 1e-1 often trips the linear head's divergence rule, hence 3e-2 between.
SEGMENTATION_LRS = (3e-3, 1e-2, 3e-2, 1e-1)
register(
    HeadSpec(
        "seg_linear",
        "heads.segmentation:LinearSegmentationHead",
        needs_patch=True,
        output="map",
        lrs=SEGMENTATION_LRS,
    )
)
register(
    HeadSpec(
        "seg_decoder",
        "heads.segmentation:DecoderSegmentationHead",
        options=(HeadOption("width", 32, "channels of the decoder's first stage (then /2, /4)", flag="seg-width"),),
        needs_patch=True,
        check=_decoder_check,
        output="map",
        lrs=SEGMENTATION_LRS,
    )
)
