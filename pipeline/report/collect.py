"""Find and load probe run folders for the report, through `pipeline.runs` (which owns the folder's layout).

A run's identity and provenance come from its RunRecord (run.json), else from its results columns or the
folder names. Runs of one head in other configurations (their own folders, `<head>@<tag>`) are told apart by
`Run.variant` (e.g. "dim 64, ffn 128"), which the report prints after the head's name. A folder without
results.parquet is evaluated by `pipeline.runs.evaluate_run`, the probe's own rules; a folder that cannot be
read is named in `Collection.problems` and the rest of the report goes on.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.cards import DatasetCard, load_card, packaged_card
from pipeline.errors import ChexError
from pipeline.runs import (
    ATTENTION_DIR,
    PREDICTIONS_FILE,
    RECORD_FILE,
    RESULTS_FILE,
    SURVIVAL_FILE,
    RunFolder,
    RunRecord,
    StatsConfig,
    evaluate_run,
    find_run_folders,
    read_record,
)
from pipeline.workspace import Workspace

if TYPE_CHECKING:
    from pipeline.tasks.base import Task

log = logging.getLogger(__name__)

RUN_FILE = RECORD_FILE
HEADS = ("linear", "glori", "mlp")  # report order; other heads follow by name


@dataclass
class Run:
    """One probe run folder and what it holds."""

    dataset: str
    backbone: str
    head: str
    label_fraction: float
    folder: Path
    results: pd.DataFrame
    record: RunRecord | None = None
    computed: bool = False  # results evaluated here from predictions (no results.parquet)
    variant: str = ""  # what sets this configuration apart from the head's others ('' = none to tell)
    _predictions: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def model(self) -> tuple[str, str]:
        """(backbone, head key): the head key is the head, or 'head (variant)' for one of several configurations."""
        return (self.backbone, head_key(self.head, self.variant))

    @property
    def is_full(self) -> bool:
        return math.isclose(self.label_fraction, 1.0)

    @property
    def predictions_path(self) -> Path | None:
        path = self.folder / PREDICTIONS_FILE
        return path if path.is_file() else None

    @property
    def survival_path(self) -> Path | None:
        path = self.folder / SURVIVAL_FILE
        return path if path.is_file() else None

    @property
    def attention_dir(self) -> Path | None:
        path = self.folder / ATTENTION_DIR
        return path if path.is_dir() and any(path.iterdir()) else None

    def predictions(self) -> pd.DataFrame | None:
        """The run's predictions table (read once), None when the run has none."""
        if self._predictions is None and self.predictions_path is not None:
            self._predictions = pd.read_parquet(self.predictions_path)
        return self._predictions

    def survival(self) -> pd.DataFrame | None:
        return pd.read_parquet(self.survival_path) if self.survival_path is not None else None


@dataclass
class Collection:
    """All runs found, the data set cards that could be read, and what went wrong while reading."""

    runs: list[Run]
    cards: dict[str, DatasetCard]
    synthetic: set[str]
    problems: list[str]
    workspace: Workspace | None = None
    expected_datasets: list[str] = field(default_factory=list)
    image_roots: dict[str, Path] = field(default_factory=dict)  # `chex report --image-root`: dataset ("" = all)
    _tasks: dict[str, Task] = field(default_factory=dict, repr=False)

    @property
    def datasets(self) -> list[str]:
        return order_datasets({r.dataset for r in self.runs} | set(self.expected_datasets))

    @property
    def backbones(self) -> list[str]:
        return sorted({r.backbone for r in self.runs})

    def full_runs(self, dataset: str | None = None) -> list[Run]:
        return [r for r in self.runs if r.is_full and (dataset is None or r.dataset == dataset)]

    def run(self, dataset: str, model: tuple[str, str], fraction: float = 1.0) -> Run | None:
        for r in self.runs:
            if r.dataset == dataset and r.model == model and math.isclose(r.label_fraction, fraction):
                return r
        return None

    def models(self, runs: list[Run] | None = None) -> list[tuple[str, str]]:
        """(backbone, head) pairs in report order: backbones by name, heads linear, GLoRI, MLP, then others."""
        pairs = {r.model for r in (self.runs if runs is None else runs)}
        return sorted(pairs, key=lambda m: (m[0], head_rank(m[1]), m[1]))

    def is_synthetic(self, datasets: list[str] | set[str] | None = None) -> bool:
        wanted = set(self.datasets if datasets is None else datasets)
        return bool(wanted & self.synthetic)

    def task_of(self, dataset: str) -> Task:
        """The data set's task kind (pipeline/tasks/): the one its card chooses, else its runs' (run.json's `task`,
        else the tables in its folders)."""
        if dataset not in self._tasks:
            self._tasks[dataset] = _task_of(self.cards.get(dataset), [r for r in self.runs if r.dataset == dataset])
        return self._tasks[dataset]

    def datasets_of(self, task: Task | str) -> list[str]:
        """Data sets with full-training-set runs whose task is `task` (a Task or its registered name)."""
        name = task if isinstance(task, str) else task.name
        return [d for d in self.datasets if self.full_runs(d) and self.task_of(d).name == name]

    def tasks(self) -> list[Task]:
        """Every registered task kind, in registry order (each adds its report tables, or says what is missing)."""
        from pipeline.tasks import task_named, task_names

        return [task_named(name) for name in task_names()]

    def is_survival(self, dataset: str) -> bool:
        card = self.cards.get(dataset)
        if card is not None and card.survival_tasks:
            return True
        return any(
            (r.results["metric"] == "logrank_p").any() or r.survival_path is not None
            for r in self.runs
            if r.dataset == dataset
        )


DATASET_ORDER = ("cxrlt24", "chexpert", "shenzhen", "montgomery", "jsrt", "plco")
DATASET_NAMES = {
    "cxrlt24": "CXR-LT 24",
    "chexpert": "CheXpert",
    "shenzhen": "Shenzhen",
    "montgomery": "Montgomery",
    "jsrt": "JSRT",
    "plco": "PLCO",
    "ranzcr": "RANZCR CLiP",
    "scr": "JSRT SCR",
    "montgomery_lungs": "Montgomery lungs",
    "shenzhen_lungs": "Shenzhen lungs",
    "chexmask": "CheXmask",
}
HEAD_NAMES = {
    "linear": "Linear", "glori": "GLoRI", "mlp": "MLP", "zeroshot": "Zero-shot", "seg_linear": "Linear (seg.)",
    "seg_decoder": "Decoder",
}  # fmt: skip


def order_datasets(names: set[str] | list[str]) -> list[str]:
    """The paper's data set order, then any others by name."""
    return sorted(set(names), key=lambda d: (DATASET_ORDER.index(d) if d in DATASET_ORDER else 99, d))


def head_key(head: str, variant: str = "") -> str:
    """The head's name in a model tuple: 'glori', or 'glori (dim 64, ffn 128)' for one of its configurations."""
    return f"{head} ({variant})" if variant else head


def head_rank(head: str) -> int:
    base = head.partition(" (")[0]
    return HEADS.index(base) if base in HEADS else len(HEADS)


def dataset_name(dataset: str) -> str:
    return DATASET_NAMES.get(dataset, dataset)


def head_name(head: str) -> str:
    """The head's printed name ('GLoRI'), with its configuration when the key names one ('GLoRI (dim 64)')."""
    base, sep, variant = head.partition(" (")
    return HEAD_NAMES.get(base, base) + sep + variant


def collect_runs(
    sources: list[Path] | None = None,
    workspace: Workspace | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> Collection:
    """Every run folder under `sources` (results roots, run folders or their Parquet files).

    Without sources the workspace's results/ folder is read, and the workspace's manifests name the data sets
    the report expects. Cards come from the workspace (`manifests/<dataset>.card.yaml`), else the packaged card;
    a data set is synthetic when its card or a run.json says so.
    """
    problems: list[str] = []
    expected: list[str] = []
    if not sources:
        if workspace is None:
            raise ValueError("collect_runs needs sources or a workspace")
        sources = [workspace.root / "results"]
        expected = workspace.datasets()
        if not sources[0].is_dir():
            problems.append(f"no results folder at {sources[0]}: run `chex probe` first")
    runs = []
    for folder in _run_folders(sources, problems):
        try:
            runs.append(_load_run(folder, n_resamples, seed))
        except (ChexError, OSError, ValueError, KeyError) as exc:  # RunRecordError is a ChexError
            problems.append(f"cannot read run folder {folder}: {exc}")
    label_configurations(runs)
    runs = _dedupe(runs, problems)
    names = {r.dataset for r in runs} | set(expected)
    cards = {name: card for name in names if (card := _card(name, workspace)) is not None}
    synthetic = {name for name, card in cards.items() if card.synthetic}
    synthetic |= {r.dataset for r in runs if r.record is not None and r.record.synthetic}
    return Collection(runs, cards, synthetic, problems, workspace, expected)


def _run_folders(sources: list[Path], problems: list[str]) -> list[Path]:
    folders: list[Path] = []
    for source in sources:
        source = Path(source)
        if not source.exists():
            problems.append(f"no such results file or folder: {source}")
            continue
        found = find_run_folders(source)
        if not found:
            problems.append(f"no results.parquet or predictions.parquet under {source}: run `chex probe` first")
        folders.extend(found)
    return list(dict.fromkeys(folders))


def _load_run(folder: Path, n_resamples: int, seed: int) -> Run:
    record = read_record(folder)
    computed = False
    if (folder / RESULTS_FILE).is_file():
        results = pd.read_parquet(folder / RESULTS_FILE)
    else:
        log.info("no %s in %s: evaluating the run", RESULTS_FILE, folder)
        config = StatsConfig.for_run(record) if record is not None else StatsConfig(n_resamples=n_resamples, seed=seed)
        results = evaluate_run(folder, config, record)
        computed = True
    identity = _identity(folder, results, record)
    results = results.assign(**identity)
    return Run(**identity, folder=folder, results=results, record=record, computed=computed)


def _identity(folder: Path, results: pd.DataFrame, record: RunRecord | None) -> dict:
    if record is not None:
        return {"dataset": record.dataset, "backbone": record.backbone, "head": record.head.lower(),
                "label_fraction": float(record.label_fraction)}  # fmt: skip
    from_path = RunFolder(folder).path_names()

    def value(column: str):
        if column in results.columns:
            values = results[column].dropna().unique()
            if len(values) == 1:
                return values[0].item() if isinstance(values[0], np.generic) else values[0]
        return None

    identity = {c: str(value(c) or from_path.get(c) or "") for c in ("dataset", "backbone", "head")}
    if not all(identity.values()):
        raise ValueError(f"cannot tell the dataset/backbone/head of this run ({identity})")
    identity["head"] = identity["head"].lower()
    fraction = value("label_fraction")
    if fraction is None:
        fraction = from_path["label_fraction"] or 1.0
    identity["label_fraction"] = float(fraction)
    return identity


def label_configurations(runs: list[Run]) -> None:
    """Set each run's `variant`: the head options (short names, heads.registry) off the head's defaults or
    differing between its runs in the report, the same for every run of one head; where two runs of one data set,
    backbone, head and label fraction still share a label, the probe settings that differ between them, and
    last the folder's configuration tag."""
    from heads.registry import head_names, head_spec

    by_head: dict[str, list[Run]] = {}
    for run in runs:
        if run.record is not None and run.head in head_names():
            by_head.setdefault(run.head, []).append(run)
        else:
            run.variant = RunFolder(run.folder).path_names().get("config_tag") or ""
    for head, group in by_head.items():
        spec = head_spec(head)
        defaults, shorts = spec.config(), spec.shorts()
        values = [{n: r.record.head_config.get(n, d) for n, d in defaults.items() if n != "name"} for r in group]
        shown = [
            n for n in defaults if n != "name" and any(v[n] != defaults[n] or v[n] != values[0][n] for v in values)
        ]
        for run, mine in zip(group, values, strict=True):
            run.variant = ", ".join(_label_item(shorts[n], mine[n]) for n in shown)
    clashes: dict[tuple, list[Run]] = {}
    for run in runs:
        clashes.setdefault((run.dataset, run.model, round(run.label_fraction, 9)), []).append(run)
    for group in (g for g in clashes.values() if len(g) > 1):
        probes = [{k: v for k, v in (r.record.config if r.record else {}).items() if k != "label_fraction"}
                  for r in group]  # fmt: skip
        names = sorted({n for p in probes for n in p if any(q.get(n) != p.get(n) for q in probes)})
        for run, probe in zip(group, probes, strict=True):
            extra = [_label_item(n.replace("_", " "), probe.get(n)) for n in names]
            if not extra:  # the same configuration in two folders: the folders tell them apart
                extra = [RunFolder(run.folder).path_names().get("config_tag") or "default folder"]
            run.variant = ", ".join([run.variant, *extra] if run.variant else extra)


def _label_item(name: str, value: object) -> str:
    if isinstance(value, bool):
        return name if value else f"no {name}"
    if isinstance(value, list | tuple):
        return f"{len(value)} {name}"
    if isinstance(value, float):
        return f"{name} {value:g}"
    return f"{name} {'default' if value is None else value}"


def _dedupe(runs: list[Run], problems: list[str]) -> list[Run]:
    seen: dict[tuple, Run] = {}
    for run in runs:
        key = (run.dataset, run.backbone, run.model[1], round(run.label_fraction, 9))
        if key in seen:
            problems.append(f"two run folders for {key}: {seen[key].folder} and {run.folder}; using the first")
            continue
        seen[key] = run
    return list(seen.values())


def _task_of(card: DatasetCard | None, runs: list[Run]) -> Task:
    from pipeline.tasks import task_for_card, task_of_run
    from pipeline.tasks.registry import default_task

    if card is not None:
        try:
            return task_for_card(card)
        except ChexError as exc:  # a card of a kind this chex does not know: its runs say
            log.warning("%s", exc)
    for run in runs:
        try:
            return task_of_run(run.folder, run.record)
        except ChexError as exc:
            log.warning("%s", exc)
    return default_task()


def _card(name: str, workspace: Workspace | None) -> DatasetCard | None:
    if workspace is not None and workspace.card_path(name).is_file():
        try:
            return load_card(workspace.card_path(name))
        except ChexError as exc:
            log.warning("%s", exc)
    try:
        return packaged_card(name)
    except ChexError:
        return None
