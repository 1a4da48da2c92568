"""Checks of arguments and paths that run before a command imports torch or pandas.

A wrong head name, a missing checkpoint or a data set the workspace lacks is told in well under a second
(benchmarks/bench_startup.py), not after the seconds that loading the libraries takes; the library still checks
the same things for its own callers.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.cli.constants import ADAPTERS
from pipeline.errors import CheckpointError, ConfigError
from pipeline.workspace import Workspace, check_name

_ZIP = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
_PICKLE = 0x80  # a pickle (protocol 2+): torch.save's legacy format and plain pickled state dicts


def checkpoint_path(path: Path, option: str = "--checkpoint") -> Path:
    """`path` if it is a checkpoint chex can try to load (a file, or a folder whose weights file
    pipeline.backbone.found picks), else CheckpointError saying what it is instead."""
    from pipeline.backbone.found import inspect_path  # torch-free: standard library only

    if not path.exists():
        raise CheckpointError(f"{option} {path} does not exist; give a checkpoint file or folder")
    weights = inspect_path(path).weights
    try:
        with open(weights, "rb") as handle:
            head = handle.read(9)
    except OSError as exc:
        raise CheckpointError(f"{option} {weights}: cannot be read ({exc.strerror})") from None
    if not _looks_like_weights(weights, head):
        raise CheckpointError(
            f"{option} {weights} is not a checkpoint: neither a PyTorch file (zip or pickle) nor safetensors "
            f"({_describe(head)}); give the .pt/.pth/.safetensors weights or a chex checkpoint folder"
        )
    return path


def at_least(**options: tuple[int, int]) -> None:
    """ConfigError naming the first option (`name=(value, least)`, name as in `--name`) below its least value,
    so a bad number is refused before anything is written (no half-made store)."""
    for name, (value, least) in options.items():
        if value < least:
            raise ConfigError(f"--{name.replace('_', '-')} {value}: must be at least {least}")


def datasets_in(ws: Workspace, names: list[str], then: str) -> list[str]:
    """`names` (checked as names) if the workspace has a manifest for each, else ConfigError saying what to run
    (`then`: the steps after the manifest; `{name}` stands for the first missing data set)."""
    for name in names:
        check_name(name, "data set")
    missing = [n for n in names if not ws.manifest_path(n).is_file()]
    if missing:
        have = ", ".join(ws.datasets()) or "none"
        first = missing[0]
        make = (
            f"`chex manifest {first} --source FILE --root DIR`" if first in ADAPTERS
            else f"`chex manifest custom {first} --labels FILE --root DIR`"
        )  # fmt: skip
        raise ConfigError(
            f"no data set {', '.join(map(repr, missing))} in the workspace {ws.root.resolve()} (data sets: {have}); "
            f"make it with {make} (or `chex synth` for the synthetic cohort), then {then.format(name=first)}"
        )
    return names


def _looks_like_weights(path: Path, head: bytes) -> bool:
    if head.startswith(_ZIP) or (head[:1] and head[0] == _PICKLE):
        return True
    # safetensors: an 8-byte little-endian header length, then the JSON header
    return path.suffix == ".safetensors" and len(head) == 9 and head[8:9] == b"{"


def _describe(head: bytes) -> str:
    if not head:
        return "it is empty"
    text = head.decode("utf-8", errors="replace")
    if all(c.isprintable() or c.isspace() for c in text):
        return f"it starts with the text {text.strip()[:9]!r}"
    return f"its first bytes are {head[:8].hex(' ')}"
