"""The backbone family registry: families register themselves; the registry knows none of them by name.

A family (one module in pipeline/backbone/families/, listed in that package's `__init__`) is a `Family`:
its name, the files it expects, the preprocessing its authors evaluate with, what it follows (the original
repository), a `recognise` test on a `Found` path and a `load` that builds the model (timm where timm has the
architecture), converts the weights strictly and returns a `Backbone`. Families are asked in `priority`
order (folder configs before tell-tale keys); the first that recognises the path loads it.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.backbone.found import Found, inspect_path
from pipeline.errors import CheckpointError

if TYPE_CHECKING:
    from pipeline.backbone.interface import Backbone
    from pipeline.zeroshot.alignment import ImageText

_FAMILIES: dict[str, Family] = {}


@dataclass(frozen=True)
class Family(ABC):
    """One backbone family: how to recognise, build, convert and preprocess it (subclass and `register`)."""

    name: str
    summary: str  # what it is, e.g. "RAD-DINO and other transformers Dinov2Model folders"
    expects: str  # the files, e.g. "folder: config.json (model_type dinov2) + model.safetensors"
    preprocessing: str  # the declared preprocessing, in words
    follows: str  # the original code this family's conversion follows
    priority: int = 50  # lower is asked first; folder-config families < key-based ones
    by_config: bool = False  # recognises from a folder's JSON config alone (no weights read, no torch)
    arg: str | None = None  # what follows the colon of a named family: the model of "timm:vit_small_patch14"

    @abstractmethod
    def recognise(self, found: Found) -> bool:
        """Whether `found` is this family's files."""

    @abstractmethod
    def load(self, found: Found, image_size: int | None = None, num_heads: int | None = None) -> Backbone:
        """Build the model, load the weights strictly and return it as a `Backbone`."""

    def image_text(self, found: Found, tokenizer: Path | None = None) -> ImageText:
        """The image-text alignment of the same files (zero-shot; pipeline/zeroshot/): CLIP families override it.
        `tokenizer`: where the tokenizer files are, when not beside the weights."""
        from pipeline.zeroshot.alignment import no_text_tower

        raise CheckpointError(no_text_tower(self.name))


def register(family: Family) -> Family:
    if family.name in _FAMILIES and type(_FAMILIES[family.name]) is not type(family):
        raise ValueError(f"backbone family {family.name!r} is registered twice")
    _FAMILIES[family.name] = family
    return family


def all_families() -> list[Family]:
    """Every registered family, in the order they are asked."""
    import pipeline.backbone.families  # noqa: F401  (registration)

    return sorted(_FAMILIES.values(), key=lambda f: (f.priority, f.name))


def get_family(name: str) -> Family:
    """A family by name; "NAME:ARG" passes ARG to it (e.g. "timm:convnext_tiny")."""
    base, _, arg = name.partition(":")
    fams = {f.name: f for f in all_families()}
    if base not in fams:
        raise CheckpointError(f"unknown backbone family {base!r}; known: {sorted(fams)}")
    return dataclasses.replace(fams[base], arg=arg) if arg else fams[base]


def recognise(found: Found, family: str | None = None) -> Family:
    """The family that recognises `found` (or the named one); CheckpointError naming what was found."""
    if family is not None:
        return get_family(family)
    fams = all_families()
    for fam in fams:
        if fam.recognise(found):
            return fam
    raise CheckpointError(
        f"chex does not recognise {found.describe()} as a backbone; known families: "
        + "; ".join(f"{f.name} ({f.expects})" for f in fams)
        + ". List them with `chex backbones`."
    )


def precheck(path: str | Path, family: str | None = None) -> Found:
    """Argument and format errors that need no torch: the path, its weight files, a named family, and a release
    folder whose config no family recognises ("a transformers CLIPModel folder")."""
    found = inspect_path(path)
    if family is not None:
        get_family(family)
        return found
    foreign = found.folder is not None and found.describe(with_keys=False) != f"a weights file {found.weights}"
    if foreign and not any(f.by_config and f.recognise(found) for f in all_families()):
        raise CheckpointError(
            f"chex does not recognise {found.describe(with_keys=False)} as a backbone; known families: "
            + "; ".join(f"{f.name} ({f.expects})" for f in all_families())
            + ". List them with `chex backbones`."
        )
    return found


def open_backbone(
    path: str | Path, image_size: int | None = None, num_heads: int | None = None, family: str | None = None
) -> Backbone:
    """Recognise the files at `path`, build the family's model and load the weights strictly (eval mode)."""
    found = inspect_path(path)
    fam = recognise(found, family)
    backbone = fam.load(found, image_size=image_size, num_heads=num_heads)
    backbone.model.eval()
    return backbone
