"""The task-kind registry: which task handles which card task kinds (torch-free; docs/architecture.md).

A task kind is one module under pipeline/tasks/ holding a `Task` subclass (pipeline/tasks/base.py: the contract)
plus one `TaskEntry` line in `BUILTIN` below: its name, the card `kind:` values it handles, the other kinds it can
carry in the same probe, and where its class lives (loaded on first use, so cards and the CLI never import torch).
The data set card chooses the task: `task_for_card(card)`; a finished run names its task in run.json (`task`).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.cards import DatasetCard
    from pipeline.tasks.base import Task


@dataclass(frozen=True)
class TaskEntry:
    """One registered task kind: `name` (run.json's `task`), the card kinds it handles, the card kinds it carries
    alongside its own in one probe, and `target` "module:Class" (or the Task itself, for tests)."""

    name: str
    card_kinds: tuple[str, ...]
    target: object
    carries: tuple[str, ...] = ()

    def load(self) -> Task:
        target = self.target
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            target = getattr(importlib.import_module(module), attr)
        return target() if isinstance(target, type) else target  # type: ignore[return-value]


BUILTIN = (
    TaskEntry("classification", ("multilabel", "binary"), "pipeline.tasks.classification:ClassificationTask"),
    TaskEntry("survival", ("survival",), "pipeline.tasks.survival:SurvivalTask", carries=("multilabel", "binary")),
    TaskEntry("segmentation", ("segmentation",), "pipeline.tasks.segmentation:SegmentationTask"),
)
_ENTRIES: dict[str, TaskEntry] = {entry.name: entry for entry in BUILTIN}
_LOADED: dict[str, Task] = {}


def register_task(entry: TaskEntry) -> TaskEntry:
    """Add a task kind (a new module's registration, or a test's); a card kind belongs to one task only."""
    for other in _ENTRIES.values():
        clash = set(other.card_kinds) & set(entry.card_kinds)
        if other.name != entry.name and clash:
            raise ValueError(f"card kind(s) {sorted(clash)} already belong to task {other.name!r}")
    _ENTRIES[entry.name] = entry
    _LOADED.pop(entry.name, None)
    return entry


def unregister_task(name: str) -> None:
    """Remove a task kind (tests); the built-in ones are never removed."""
    if name in {e.name for e in BUILTIN}:
        raise ValueError(f"task {name!r} is built in")
    _ENTRIES.pop(name, None)
    _LOADED.pop(name, None)


def task_names() -> list[str]:
    return list(_ENTRIES)


def card_kinds() -> list[str]:
    """Every card `kind:` some registered task handles (what a card may name)."""
    return [kind for entry in _ENTRIES.values() for kind in entry.card_kinds]


def task_named(name: str) -> Task:
    """The registered task of that name (ConfigError naming the known ones)."""
    if name not in _ENTRIES:
        raise ConfigError(f"task {name!r} is not registered; known tasks: {', '.join(_ENTRIES)}")
    if name not in _LOADED:
        _LOADED[name] = _ENTRIES[name].load()
    return _LOADED[name]


def default_task() -> Task:
    """The first built-in task (classification): a run or data set that says nothing else is of this kind."""
    return task_named(BUILTIN[0].name)


def task_for_kinds(kinds: Iterable[str], where: str = "card") -> Task:
    """The one task that handles every kind in `kinds` (its own plus those it carries); ConfigError otherwise."""
    wanted = list(dict.fromkeys(kinds))
    if not wanted:
        raise ConfigError(f"{where} names no task; give it a task of kind {', '.join(card_kinds())}")
    owners = [e for e in _ENTRIES.values() if set(e.card_kinds) & set(wanted)]
    fits = [e for e in owners if set(wanted) <= set(e.card_kinds) | set(e.carries)]
    if not owners:
        raise ConfigError(f"{where}: task kind(s) {wanted} are not registered; known: {', '.join(card_kinds())}")
    if not fits:
        raise ConfigError(
            f"{where}: task kinds {wanted} cannot be probed together (one probe trains one kind of head output); "
            "split the card into one data set per kind"
        )
    return task_named(fits[0].name)


def task_for_card(card: DatasetCard) -> Task:
    """The task a data set's card chooses (its tasks' kinds)."""
    return task_for_kinds([t.kind for t in card.tasks], where=f"data set card {card.name!r}")
