"""Data set cards: what a data set is, which tasks it has, and how its labels are read.

A card is a small YAML file. The packaged cards for the real data sets live in data_manifests/; a
workspace keeps a copy next to each manifest (`manifests/<dataset>.card.yaml`), with `synthetic: true`
when the data came from `chex synth`.

Task kinds (each handled by a registered task, pipeline/tasks/; the card's kinds choose the probe's task):
- multilabel: several finding columns, values 1/0/NaN, plus -1 for uncertain labels, which the card's
  `uncertain_policy` maps: "ignore" -> NaN (masked out of the loss and metrics), "ones" -> 1, "zeros" -> 0.
- binary: one column, same values.
- survival: one or more endpoints, each a time column (years) and an event column (1 = event, 0 = censored),
  plus a horizon for the derived binary "event within horizon" outputs.
- segmentation: no label columns; `structures` names the anatomy masked per image (right_lung, left_lung, heart,
  right_clavicle, left_clavicle, or lungs: both lungs as one), read from the workspace's `masks/<dataset>/`
  (pipeline/masks/workspace.py), which `chex synth` and `chex manifest masks` write.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml

from pipeline.errors import ConfigError

TaskKind = str  # a card kind some registered task handles (pipeline/tasks/registry.py): multilabel, binary, survival
UncertainPolicy = Literal["ignore", "ones", "zeros"]
UNCERTAIN = -1.0


@dataclass(frozen=True)
class Endpoint:
    """One survival endpoint: time to event in years and the event flag."""

    name: str
    time_column: str
    event_column: str


@dataclass(frozen=True)
class Task:
    """A prediction task of a data set; `columns` are its label columns in the manifest."""

    name: str
    kind: TaskKind
    columns: tuple[str, ...] = ()
    uncertain_policy: UncertainPolicy = "ignore"
    endpoints: tuple[Endpoint, ...] = ()
    horizon_years: float | None = None
    structures: tuple[str, ...] = ()  # segmentation: the masked structures

    def endpoint_output(self, endpoint: Endpoint) -> str:
        """The binary 'event within horizon' output of one of this task's endpoints: the column named after its
        event column (death_cvd -> death_cvd_12y), else the column at the endpoint's position."""
        for column in self.columns:
            if column.startswith(f"{endpoint.event_column}_"):
                return column
        index = self.endpoints.index(endpoint) if endpoint in self.endpoints else 0
        return self.columns[min(index, len(self.columns) - 1)]


@dataclass(frozen=True)
class DatasetCard:
    """Everything chex needs to know about a data set besides its manifest."""

    name: str
    title: str
    tasks: tuple[Task, ...]
    synthetic: bool = False
    description: str = ""
    paper_splits: dict[str, int] = field(default_factory=dict)
    probe: dict[str, Any] = field(default_factory=dict)
    access: str = ""
    citation: str = ""
    views: tuple[str, ...] = ()  # views the data set is evaluated on (manifest `view`); others are left out
    image_root: str = ""  # where `chex manifest` found the images; shard/embed/report default to it
    notes: tuple[str, ...] = ()  # choices `chex manifest` made that a reader should know (split, views, ...)

    @property
    def label_columns(self) -> list[str]:
        """Classifier outputs, in card order (survival tasks contribute their 'within horizon' columns)."""
        return [c for t in self.tasks for c in t.columns]

    @property
    def survival_tasks(self) -> list[Task]:
        return [t for t in self.tasks if t.kind == "survival"]

    @property
    def segmentation_task(self) -> Task | None:
        """The card's segmentation task (at most one), if it has one."""
        return next((t for t in self.tasks if t.kind == "segmentation"), None)

    def task_of(self, column: str) -> Task:
        for task in self.tasks:
            if column in task.columns:
                return task
        raise KeyError(column)

    def labels_for_training(self, manifest: pd.DataFrame) -> np.ndarray:
        """Label matrix (N, K) float32 with each task's uncertain policy applied; NaN = masked."""
        out = np.empty((len(manifest), len(self.label_columns)), dtype=np.float32)
        for k, column in enumerate(self.label_columns):
            values = manifest[column].to_numpy(dtype=np.float64, na_value=np.nan)
            policy = self.task_of(column).uncertain_policy
            replacement = {"ignore": np.nan, "ones": 1.0, "zeros": 0.0}[policy]
            out[:, k] = np.where(values == UNCERTAIN, replacement, values)
        return out

    def with_synthetic(self, synthetic: bool = True) -> DatasetCard:
        return DatasetCard(**{**self.__dict__, "synthetic": synthetic})

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tasks"] = [_task_to_dict(t) for t in self.tasks]
        data["notes"] = list(self.notes)
        data["views"] = list(self.views)
        for key in ("views", "image_root", "notes"):  # optional: cards without them stay as they were
            if not data[key]:
                del data[key]
        return data

    def save(self, path: str | Path) -> None:
        from pipeline.atomic import write_text_atomic

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(path), yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))


def load_card(path: str | Path) -> DatasetCard:
    """Read a card from a YAML file; a malformed card is a ConfigError naming the file and field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no data set card at {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    return card_from_dict(data, source=str(path))


def card_beside(manifest: str | Path) -> DatasetCard | None:
    """The card written next to a manifest (`<name>.card.yaml` beside `<name>.parquet`), if there is one."""
    manifest = Path(manifest)
    path = manifest.with_name(manifest.name.removesuffix(".parquet") + ".card.yaml")
    return load_card(path) if path.is_file() else None


def read_card(workspace, dataset: str) -> DatasetCard:
    """The workspace's copy of a data set's card (`Workspace.card_path`), else the packaged card of that name."""
    path = workspace.card_path(dataset)
    return load_card(path) if path.is_file() else packaged_card(dataset)


def packaged_card(name: str) -> DatasetCard:
    """The card shipped in data_manifests/ for a real data set (e.g. 'cxrlt24', 'plco')."""
    resource = resources.files("data_manifests").joinpath(f"{name}.yaml")
    if not resource.is_file():
        known = ", ".join(packaged_card_names())
        raise ConfigError(
            f"unknown data set {name!r}: no card manifests/{name}.card.yaml in the workspace and no packaged card "
            f"(packaged: {known}). For your own images make the manifest and card with `chex manifest custom "
            f"{name} --labels LABELS.csv --root IMAGES` or `chex manifest folder {name} --root IMAGES "
            "--labels-from-subdirs` (README: Bringing a real data set)"
        )
    return card_from_dict(yaml.safe_load(resource.read_text()), source=f"data_manifests/{name}.yaml")


def packaged_card_names() -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml") for p in resources.files("data_manifests").iterdir() if p.name.endswith(".yaml")
    )


def card_from_dict(data: dict[str, Any], source: str = "card") -> DatasetCard:
    try:
        tasks = tuple(_task_from_dict(t) for t in data["tasks"])
        return DatasetCard(
            name=data["name"],
            title=data.get("title", data["name"]),
            tasks=tasks,
            synthetic=bool(data.get("synthetic", False)),
            description=data.get("description", ""),
            paper_splits=dict(data.get("paper_splits") or {}),
            probe=dict(data.get("probe") or {}),
            access=data.get("access", ""),
            citation=data.get("citation", ""),
            views=tuple(str(v) for v in data.get("views") or ()),
            image_root=str(data.get("image_root") or ""),
            notes=tuple(str(n) for n in data.get("notes") or ()),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: malformed data set card ({exc!r})") from exc


def _task_from_dict(data: dict[str, Any]) -> Task:
    from pipeline.tasks.registry import card_kinds

    kind = data["kind"]
    if kind not in card_kinds():  # the registered task kinds (pipeline/tasks/registry.py)
        raise ValueError(f"task kind must be one of {', '.join(card_kinds())}, not {kind!r}")
    policy = data.get("uncertain_policy", "ignore")
    if policy not in ("ignore", "ones", "zeros"):
        raise ValueError(f"uncertain_policy must be ignore, ones or zeros, not {policy!r}")
    endpoints = tuple(Endpoint(**e) for e in data.get("endpoints", ()))
    horizon = data.get("horizon_years")
    return Task(
        name=data["name"],
        kind=kind,
        columns=tuple(data.get("columns", ())),
        uncertain_policy=policy,
        endpoints=endpoints,
        horizon_years=float(horizon) if horizon is not None else None,
        structures=_structures(kind, data.get("structures")),
    )


def _structures(kind: str, structures: Any) -> tuple[str, ...]:
    if kind != "segmentation":
        if structures:
            raise ValueError(f"only a segmentation task names structures (this one is {kind})")
        return ()
    if not structures or isinstance(structures, str):
        raise ValueError("a segmentation task needs a list of structures (e.g. [right_lung, left_lung, heart])")
    names = tuple(str(s) for s in structures)
    if len(set(names)) != len(names):
        raise ValueError(f"segmentation structures repeat a name: {list(names)}")
    return names


def _task_to_dict(task: Task) -> dict[str, Any]:
    data: dict[str, Any] = {"name": task.name, "kind": task.kind, "columns": list(task.columns)}
    if task.kind not in ("survival", "segmentation"):
        data["uncertain_policy"] = task.uncertain_policy
    if task.structures:
        data["structures"] = list(task.structures)
    if task.endpoints:
        data["endpoints"] = [asdict(e) for e in task.endpoints]
    if task.horizon_years is not None:
        data["horizon_years"] = task.horizon_years
    return data
