"""The probe protocol (docs/architecture.md): lr sweep -> choose on val -> refit -> predict test.

`run_probe(workspace, dataset, head, backbone, config)` runs one probe on the cached features and writes its
run folder (pipeline.runs); `ProbeConfig` holds every knob (defaults = the paper's protocol, here only).
Rerunning an identical probe whose outputs are present is a no-op unless `force`. The run folder names the
configuration (`run_folder`): runs of other head options or probe settings live beside each other, and a run
left in the head's default folder by an older chex is moved into its own folder first.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import pipeline
from heads import HeadOptionError, HeadStack, build_head, head_names, head_spec
from pipeline.atomic import clean_stray_temps
from pipeline.device import pick_device
from pipeline.errors import ConfigError, StoreError
from pipeline.locks import folder_lock
from pipeline.probe.data import (
    Features,
    ProbeData,
    Standardizer,
    check_in_store,
    fit_standardizer,
    load_probe_data,
)
from pipeline.probe.halving import SWEEPS, halving_sweep
from pipeline.probe.results import attention_maps
from pipeline.probe.sweep import (
    DEFAULT_SELECTION,
    SELECTIONS,
    StackTrainer,
    TrainLosses,
    TrainSpec,
    default_task,
    pooled_sweep_table,
    predict_stack,
    rechoose,
)
from pipeline.runs import (
    HEAD_FILE,
    PROBE_SHORT,
    RECORD_FILE,
    RESULTS_FILE,
    SWEEP_FILE,
    RunFolder,
    RunRecord,
    RunRecordError,
    config_tag,
    files_present,
    finish_run,
    mark_incomplete,
    parse_fraction,
    read_record,
    write_parquet,
    write_tensors,
)
from pipeline.store import FeatureStore
from pipeline.tasks.base import Task
from pipeline.workspace import Workspace, check_name, resolve_workspace

log = logging.getLogger(__name__)

PAPER_LRS = (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3)
DEFAULT_EPOCHS = 10
DEFAULT_BATCH_SIZE = 256
OUTPUT_SETTINGS = ("n_resamples", "save_attention")  # ProbeConfig fields that do not name a run folder


@dataclass(frozen=True)
class ProbeConfig:
    """Knobs of one probe; None means "from the data set card's `probe` field" (else 10 epochs, batch 256)."""

    lrs: tuple[float, ...] = PAPER_LRS
    epochs: int | None = None
    batch_size: int | None = None
    weight_decay: float = 1e-4
    label_fraction: float = 1.0
    seed: int = 0
    n_resamples: int = 1000
    val_fraction: float = 0.1
    train_views: bool = True  # sample one of the stored augmented views per training image per epoch
    save_attention: int = 0  # GLoRI: attention maps of this many test images
    head_options: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    cache_bytes: int = 2 << 30  # features up to this size are read once into memory
    sweep: str = "full"  # "halving": successive halving over the lrs (pipeline/probe/halving.py)
    micro_batch: int = 0  # > 0: heads see each batch in pieces of this many images (bounded memory)
    selection: str = DEFAULT_SELECTION  # how the lr is chosen on val (pipeline/probe/sweep.py SELECTION_HELP)
    seeds: int = 1  # > 1: the whole protocol for seeds seed .. seed+N-1; numbers are the mean, with the seed SD
    cv_folds: int = 0  # > 1: repeated patient-level stratified K-fold CV over all labelled images (probe/cv.py)
    cv_repeats: int = 1
    standardize: bool = False  # probe inputs z-scored per feature, mean and SD fitted on the train split
    pooled_selection: bool = False  # --seeds N: one lr for all seeds, chosen on their mean val scores (sweep.py)

    def __post_init__(self) -> None:
        if not self.lrs or any(lr <= 0 for lr in self.lrs):
            raise ConfigError(f"--lrs {self.lrs}: give one or more positive learning rates")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} {value}: must be at least 1")
        if not 0.0 < self.label_fraction <= 1.0:
            raise ConfigError(f"--label-fraction {self.label_fraction}: must be in (0, 1]")
        if self.sweep not in SWEEPS:
            raise ConfigError(f"--sweep {self.sweep!r}: must be one of {', '.join(SWEEPS)}")
        if self.micro_batch < 0:
            raise ConfigError(f"--micro-batch {self.micro_batch}: must be 0 (whole batches) or positive")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"--selection {self.selection!r}: must be one of {', '.join(SELECTIONS)}")
        if self.seeds < 1:
            raise ConfigError(f"--seeds {self.seeds}: must be at least 1")
        if self.cv_folds == 1 or self.cv_folds < 0:
            raise ConfigError(f"--cv {self.cv_folds}: give 2 or more folds (0: the manifest's splits)")
        if self.cv_repeats < 1:
            raise ConfigError(f"--cv-repeats {self.cv_repeats}: must be at least 1")
        if self.cv_folds and self.seeds > 1:
            raise ConfigError("--cv with --seeds: the CV repeats are the seeds; use --cv-repeats N instead of --seeds")
        if self.cv_folds and self.label_fraction < 1.0:
            raise ConfigError("--cv with --label-fraction below 1 is not supported: CV uses every labelled image")
        if self.cv_repeats > 1 and not self.cv_folds:
            raise ConfigError("--cv-repeats needs --cv K")
        if self.pooled_selection and (self.seeds < 2 or self.cv_folds or self.sweep != "full"):
            raise ConfigError(
                "--pooled-selection chooses one lr over the seeds' full sweeps: give --seeds N (N >= 2), "
                "without --cv or --sweep halving"
            )

    def identity(self) -> dict[str, Any]:
        """The fields that change a probe's result (not device or cache size; head options are hashed resolved,
        as the head config)."""
        data = dataclasses.asdict(self)
        for name in ("device", "cache_bytes", "head_options"):  # the head's identity is its resolved head config
            data.pop(name)
        defaults = (("sweep", "full"), ("micro_batch", 0), ("seeds", 1), ("cv_folds", 0), ("cv_repeats", 1),
                    ("standardize", False), ("selection", DEFAULT_SELECTION),
                    ("pooled_selection", False))  # fmt: skip
        for name, default in defaults:  # absent at their defaults: old keys hold
            if data[name] == default:
                data.pop(name)
        return data


@dataclass
class RunSummary:
    """What one probe produced (or found already done)."""

    dataset: str
    backbone: str
    head: str
    label_fraction: float
    folder: Path
    chosen_lr: float
    val_macro_auroc: float
    test_macro_auroc: float
    skipped: bool = False
    seconds: float = 0.0
    sweep: list[dict[str, Any]] = field(default_factory=list)
    val_name: str = "val macro AUROC"  # what the two numbers are, in the run's task's words (pipeline/tasks/)
    test_name: str = "test macro AUROC"


def _one_writer(func):
    """Run `func` holding the run folder's lock (pipeline/locks.py): two probes of one run never interleave.
    Names that become folders are checked first."""

    @functools.wraps(func)
    def wrapper(workspace, dataset, head, backbone=None, config=None, *args, **kwargs):
        ws = workspace if isinstance(workspace, Workspace) else resolve_workspace(workspace)
        check_name(dataset, "data set")
        check_name(head, "head")
        if head not in head_names():
            return func(ws, dataset, head, backbone, config, *args, **kwargs)  # refused there, with the known heads
        name = resolve_backbone(ws, backbone)
        folder = run_folder(ws, dataset, name, head, config or ProbeConfig())
        _move_misplaced_run(ws, dataset, name, head, (config or ProbeConfig()).label_fraction)
        with folder_lock(folder.root, "probe run folder"):
            return func(ws, dataset, head, name, config, *args, **kwargs)

    return wrapper


@_one_writer
def run_probe(
    workspace: Workspace | str | Path,
    dataset: str,
    head: str,
    backbone: str | None = None,
    config: ProbeConfig | None = None,
    force: bool = False,
    progress: bool = True,
) -> RunSummary:
    """Sweep, choose, refit and predict one head on one data set's cached features; write the run folder."""
    started = time.perf_counter()
    ws = workspace if isinstance(workspace, Workspace) else resolve_workspace(workspace)
    config = with_head_lrs(config or ProbeConfig(), head)
    head_config = head_config_of(head, config.head_options)
    backbone = resolve_backbone(ws, backbone)
    store = FeatureStore.open(ws.features_dir(backbone))
    data = load_probe_data(ws, dataset, config.seed, config.label_fraction, config.val_fraction, store)
    task = data.task
    check_head_output(head, task, dataset)
    check_in_store(store, list(data.image_ids), dataset, backbone)
    epochs, batch_size = _schedule(data, config)
    factory = _factory(head, store, len(data.outputs), config.head_options)
    folder = run_folder(ws, dataset, backbone, head, config)
    key = _run_key(dataset, backbone, head_config, config, epochs, batch_size, store, data)
    previous = _previous_record(folder)
    if previous is not None and previous.key == key and files_present(folder.root, previous) and not force:
        log.info("%s: outputs present for this configuration; nothing to do (use --force to rerun)", folder.root)
        return _summary_from(folder, previous, skipped=True)
    _refuse_other_configuration(folder, previous, head_config, config, force)
    if force:
        shutil.rmtree(folder.partial_dir, ignore_errors=True)
    clean_stray_temps(folder.root)  # files a killed run left half-written

    device = pick_device(config.device)
    seeds = [config.seed + i for i in range(config.seeds)]
    if config.cv_folds:
        train_ids = list(data.image_ids)  # every image trains in some fold
    else:
        train_ids = list(data.image_ids[np.concatenate([data.train, data.refit_val])])
    max_views = store.n_views(train_ids) if config.train_views and task.uses_train_views else 1
    parts = ("cls", "patch") if head_spec(head).uses_patch(config.head_options) else ("cls",)
    features = Features(store, list(data.image_ids), parts, max_views=max_views, cache_bytes=config.cache_bytes)
    stage = ProbeStage(head, factory, features, config, epochs, batch_size, device, max_views > 1, key, progress)
    timings: dict[str, float] = {}
    if config.cv_folds:
        from pipeline.probe.cv import run_cv

        runs = run_cv(stage, data, folder.partial_dir, timings)
    else:
        seed_data = [data if seed == config.seed else load_probe_data(
            ws, dataset, seed, config.label_fraction, config.val_fraction, store
        ) for seed in seeds]  # fmt: skip
        tags = ["" if len(seeds) == 1 else f"-s{seed}" for seed in seeds]
        if config.pooled_selection:
            runs = stage.run_pooled(seed_data, seeds, folder.partial_dir, tags, timings)
        else:
            passes = zip(seed_data, seeds, tags, strict=True)
            runs = [stage.run(d, seed, folder.partial_dir, tag, timings) for d, seed, tag in passes]
    first = runs[0]

    # 3. outputs: the task's tables, the sweep, weights, attention maps; then statistics and the run record.
    identity = dict(dataset=dataset, backbone=backbone, head=head, label_fraction=config.label_fraction)
    per_pass = [r.tables(identity, tagged=len(runs) > 1) for r in runs]
    tables = {name: _concat([p.get(name) for p in per_pass]) for name in dict.fromkeys(n for p in per_pass for n in p)}
    table = _concat([r.table.assign(seed=r.seed, fold=r.fold) if len(runs) > 1 else r.table for r in runs])
    files = [*(name for name, frame in tables.items() if frame is not None), SWEEP_FILE, RESULTS_FILE, HEAD_FILE]
    mark_incomplete(folder.root)  # the folder is incomplete until the new record is written
    write_parquet(table, folder / SWEEP_FILE)
    write_tensors(first.refit.members[0].state_dict(), folder / HEAD_FILE)  # the first seed's (and fold's) head
    if config.save_attention and head_spec(head).has_attention and not config.cv_folds:
        features.standardizer = first.standardizer
        files.append(attention_maps(first.refit.members[0], features, data, config.save_attention, device,
                                    folder.attention_path))  # fmt: skip
    store_attrs = {k: v for k, v in store.attrs.items() if k != "layout"}
    skip_train = _union([r.skip_train for r in runs])
    notes = dict(first.data.notes)
    if len(runs) > 1:
        notes.update(_seed_notes(runs, config))
    refit_sizes = sorted({r.n_refit for r in runs})
    record = RunRecord(
        key=key, **identity, seed=config.seed, n_resamples=config.n_resamples, chosen_lr=first.chosen_lr,
        val_macro_auroc=float(first.table[task.score_column].iloc[first.chosen]), test_macro_auroc=float("nan"),
        selected_by=str(first.table["selected_by"].iloc[0]), epochs=epochs, batch_size=batch_size,
        train_views=max_views, head_config=head_config, config=config.identity(), outputs=list(data.outputs),
        skipped_train=skip_train,
        skipped_test=task.skipped(data.labels[first.data.test], data.outputs),
        threshold_transfer="quantile", store_path=str(store.path), checkpoint=store_attrs.get("checkpoint"),
        checkpoint_sha256=store_attrs.get("checkpoint_sha256"), store_attrs=store_attrs,
        synthetic=bool(data.card.synthetic),
        data={"n_train": len(first.data.train), "n_val": len(first.data.val),
              "n_refit": refit_sizes[0] if len(refit_sizes) == 1 else refit_sizes,
              "n_test": len(first.data.test), **notes},
        feature_access="memory" if features.cached is not None else "streamed", device=str(device),
        versions=_versions(), files=[*files, RECORD_FILE], task=task.name,
    )  # fmt: skip
    record, _ = finish_run(folder.root, record, tables, timings=timings, started=started)
    shutil.rmtree(folder.partial_dir, ignore_errors=True)
    return _summary_from(folder, record, skipped=False)


@dataclass
class SeedRun:
    """One pass of the protocol (one seed, or one fold of one CV repeat): its data, sweep and refit."""

    seed: int
    data: ProbeData
    table: pd.DataFrame
    val_probs: np.ndarray  # (N_val, K) of the chosen lr's sweep head
    test_probs: np.ndarray  # (N_test, K) of the refit head
    refit: HeadStack
    skip_train: dict[str, str]
    n_refit: int
    standardizer: Standardizer | None = None
    fold: int = -1  # CV: the held-out fold (-1: the manifest's test split)

    @property
    def chosen(self) -> int:
        return int(np.flatnonzero(self.table["chosen"].to_numpy())[0])

    @property
    def chosen_lr(self) -> float:
        return float(self.table["lr"].iloc[self.chosen])

    def tables(self, identity: dict[str, Any], tagged: bool = False) -> dict[str, pd.DataFrame | None]:
        """This pass's run-folder tables, by its task (file name -> rows); `tagged` adds the seed (and fold) to every
        table when a run holds several passes."""
        return self.data.task.pass_tables(self.data, self.test_probs, self.val_probs, identity, self.seed,
                                          self.chosen_lr, self.skip_train, self.fold, tagged)  # fmt: skip


@dataclass
class ProbeStage:
    """What every pass of one probe shares (head factory, features, schedule, device); `run` does one pass:
    1. the sweep (all lrs side by side on train, scored on val, the lr chosen by the selection rule),
    2. the refit (the chosen lr on train + val) and the test predictions."""

    head: str
    factory: Any
    features: Features
    config: ProbeConfig
    epochs: int
    batch_size: int
    device: torch.device
    sample_views: bool
    key: str
    progress: bool = True

    def run(self, data: ProbeData, seed: int, partial: Path, tag: str, timings: dict[str, float],
            fold: int = -1) -> SeedRun:  # fmt: skip
        """One pass: the sweep, the lr its selection rule chooses, the refit and the test predictions."""
        swept = self.sweep(data, seed, partial, tag, timings)
        return self.finish(data, seed, swept, swept.table(self.config.selection), partial, tag, timings, fold)

    def run_pooled(self, datas: list[ProbeData], seeds: list[int], partial: Path, tags: list[str],
                   timings: dict[str, float]) -> list[SeedRun]:  # fmt: skip
        """`--pooled-selection`: every seed's sweep first, then one lr for all of them, chosen by the selection
        rule on the seeds' mean val scores (`pooled_sweep_table`; an lr that diverged in any seed is not
        eligible), then every seed's refit at that lr. Each seed's sweep table keeps its own val scores, marks
        the pooled choice `chosen` and the lr it would have chosen alone `chosen_alone`."""
        rule = self.config.selection
        swepts = [self.sweep(d, seed, partial, tag, timings) for d, seed, tag in zip(datas, seeds, tags, strict=True)]
        own = [s.table(rule) for s in swepts]
        pooled = pooled_sweep_table(own, rule)
        chosen = pooled["chosen"].to_numpy()
        log.info("%s/%s: one lr %g for %d seeds (%s)", datas[0].dataset, self.head, pooled["lr"][chosen].iloc[0],
                 len(seeds), pooled["selected_by"].iloc[0])  # fmt: skip
        runs = []
        for data, seed, tag, swept, table in zip(datas, seeds, tags, swepts, own, strict=True):
            table = table.assign(chosen_alone=table["chosen"], chosen=chosen, selected_by=pooled["selected_by"])
            runs.append(self.finish(data, seed, swept, table, partial, tag, timings, pooled=pooled))
        return runs

    def finish(self, data: ProbeData, seed: int, swept: Swept, table: pd.DataFrame, partial: Path, tag: str,
               timings: dict[str, float], fold: int = -1, pooled: pd.DataFrame | None = None) -> SeedRun:  # fmt: skip
        """The refit at `table`'s chosen lr and the test predictions. The refit guard: a refit whose training
        diverged (`TrainLosses.diverged`, the sweep's rule) falls back to the next lr the rule chooses once that
        lr is excluded (from `pooled`, the seeds' pooled table, when given), said in `selected_by`."""
        tried: list[float] = []
        while True:
            chosen = int(np.flatnonzero(table["chosen"].to_numpy())[0])
            lr = float(table["lr"].iloc[chosen])
            log.info("%s/%s%s: chosen lr %g (%s)", data.dataset, self.head, tag, lr, table["selected_by"].iloc[0])
            refit_tag = tag if not tried else f"{tag}-lr{lr:g}"  # a fallback refit never resumes the diverged one
            refit, test_probs, n_refit, losses = self.refit(data, seed, lr, partial, refit_tag, timings,
                                                            swept.standardizer, with_losses=True)  # fmt: skip
            if not losses.diverged()[0]:
                break
            tried.append(lr)
            why = f"the refit at lr {', '.join(f'{t:g}' for t in tried)} diverged; fell back to the next lr"
            nxt = rechoose(pooled if pooled is not None else table, self.config.selection, tried, why)
            if nxt is None:
                log.warning("%s/%s%s: the refit at lr %g diverged and no other eligible lr is left; kept",
                            data.dataset, self.head, tag, lr)  # fmt: skip
                table = table.assign(selected_by=table["selected_by"].astype(str) +
                                     f"; the refit at lr {lr:g} diverged, no other eligible lr left: kept")  # fmt: skip
                break
            log.warning("%s/%s%s: %s", data.dataset, self.head, tag, why)
            table = table.assign(chosen=nxt["chosen"].to_numpy(), selected_by=nxt["selected_by"].iloc[0])
        return SeedRun(seed, data, table, swept.val_probs[chosen], test_probs, refit, swept.skip_train, n_refit,
                       swept.standardizer, fold)  # fmt: skip

    def sweep(self, data: ProbeData, seed: int, partial: Path, tag: str, timings: dict[str, float]) -> Swept:
        """Every lr side by side on train, scored on val (the train losses kept for the divergence check)."""
        config, features, device = self.config, self.features, self.device
        dataset, head = data.dataset, self.head
        task = data.task
        skip_train = task.skipped(data.labels[data.train], data.outputs)
        by_reason: dict[str, list[str]] = {}
        for name, reason in skip_train.items():
            by_reason.setdefault(reason, []).append(name)
        for reason, names in by_reason.items():  # one line per reason: a long-tailed set can lose dozens of outputs
            log.warning(
                "%s/%s: %d output(s) with %s in train, left out of lr selection and scored by the prior: %s",
                dataset, head, len(names), reason, ", ".join(names),
            )  # fmt: skip
        standardizer = fit_standardizer(features, data.train) if config.standardize else None
        features.standardizer = standardizer
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        stack = HeadStack(self.factory, len(config.lrs))
        spec = self._spec(config.lrs, seed)
        skip_idx = [data.outputs.index(name) for name in skip_train]
        what = f"{dataset}/{head}{tag} sweep ({len(config.lrs)} lrs{', halving' if config.sweep == 'halving' else ''})"
        key = self.key + tag
        halved = None
        if config.sweep == "halving":
            val_probs, halved = halving_sweep(stack, features, data.train, data.val, data.labels, skip_idx, spec,
                                              device, self.eval_batch, partial / f"sweep{tag}.pt", key, what,
                                              self.progress, config.selection, task)  # fmt: skip
            losses = None
        else:
            trainer = StackTrainer(stack, features, data.train, data.labels, spec, device, partial / f"sweep{tag}.pt",
                                   key, what, task)  # fmt: skip
            trainer.train_until(spec.epochs, self.progress)
            val_probs = predict_stack(stack, features, data.val, self.eval_batch, device, task)
            losses = trainer.train_losses
        features.standardizer = None
        timings["sweep_s"] = timings.get("sweep_s", 0.0) + time.perf_counter() - t0
        return Swept(tuple(config.lrs), val_probs, data.labels[data.val], skip_idx, skip_train, losses, halved,
                     standardizer, task)  # fmt: skip

    def refit(self, data: ProbeData, seed: int, lr: float, partial: Path, tag: str, timings: dict[str, float],
              standardizer: Standardizer | None = None, with_losses: bool = False):  # fmt: skip
        """The lr on train + val (label fraction applied), then (head, test probabilities (N_test, K), refit size),
        and with `with_losses` the refit's `TrainLosses` last."""
        t0 = time.perf_counter()
        self.features.standardizer = standardizer  # the sweep's: fitted on the train split only
        torch.manual_seed(seed + 1)
        refit = HeadStack(self.factory, 1)
        refit_pos = np.concatenate([data.train, data.refit_val])
        trainer = StackTrainer(refit, self.features, refit_pos, data.labels, self._spec((lr,), seed + 1), self.device,
                               partial / f"refit{tag}.pt", self.key + tag,
                               f"{data.dataset}/{self.head}{tag} refit (lr {lr:g})", data.task)  # fmt: skip
        trainer.train_until(trainer.spec.epochs, self.progress)
        test_probs = predict_stack(refit, self.features, data.test, self.eval_batch, self.device, data.task)[0]
        self.features.standardizer = None
        timings["refit_s"] = timings.get("refit_s", 0.0) + time.perf_counter() - t0
        if with_losses:
            return refit, test_probs, len(refit_pos), trainer.train_losses
        return refit, test_probs, len(refit_pos)

    @property
    def eval_batch(self) -> int:
        return self.config.micro_batch or max(self.batch_size, 64)

    def _spec(self, lrs, seed: int) -> TrainSpec:
        config = self.config
        return TrainSpec(tuple(lrs), self.epochs, self.batch_size, config.weight_decay, seed, self.sample_views,
                         config.micro_batch)  # fmt: skip


@dataclass
class Swept:
    """A finished sweep: val probabilities of every lr (H, N_val, K), the train losses, and `table(rule)`."""

    lrs: tuple[float, ...]
    val_probs: np.ndarray
    val_labels: np.ndarray
    skip_idx: list[int]
    skip_train: dict[str, str]
    losses: TrainLosses | None
    halving_table: pd.DataFrame | None = None
    standardizer: Standardizer | None = None
    task: Task | None = None  # whose sweep table and selection rule (None: classification)

    def table(self, rule: str) -> pd.DataFrame:
        """The sweep table with the lr `rule` chooses (successive halving: its own survivor)."""
        if self.halving_table is not None:
            return self.halving_table
        task = self.task or default_task()
        return task.sweep_table(self.lrs, self.val_probs, self.val_labels, self.skip_idx, rule, self.losses)


def _concat(frames: list[pd.DataFrame | None]) -> pd.DataFrame | None:
    present = [f for f in frames if f is not None]
    if not present:
        return None
    return present[0] if len(present) == 1 else pd.concat(present, ignore_index=True)


def _union(skipped: list[dict[str, str]]) -> dict[str, str]:
    """Outputs skipped in any pass (so every seed's macro averages the same outputs), with the first reason."""
    out: dict[str, str] = {}
    for one in skipped:
        for name, reason in one.items():
            out.setdefault(name, reason)
    return out


def _seed_notes(runs: list[SeedRun], config: ProbeConfig) -> dict[str, Any]:
    """The per-seed (per-fold) choices, for run.json's `data`."""
    notes: dict[str, Any] = {
        "seeds": sorted({r.seed for r in runs}),
        "chosen_lrs": [r.chosen_lr for r in runs],
        "selected_by": [str(r.table["selected_by"].iloc[0]) for r in runs],
    }
    if config.pooled_selection:
        notes["pooled_selection"] = (
            f"one lr for all {len(runs)} seeds, chosen by --selection {config.selection} on the seeds' mean val "
            "scores per lr (an lr that diverged in any seed not eligible); chosen_lrs_alone: each seed's own choice"
        )
        notes["chosen_lrs_alone"] = [float(r.table["lr"][r.table["chosen_alone"]].iloc[0]) for r in runs]
    if config.cv_folds:
        notes["cv"] = (
            f"{config.cv_repeats} x {config.cv_folds}-fold patient-level stratified CV over all labelled images "
            "(the manifest's splits pooled); each fold's train part carves its own stratified val split"
        )
    return notes


def check_head_output(head: str, task: Task, dataset: str) -> None:
    """ConfigError when `head` does not give the output the data set's task trains (heads.registry `HeadSpec.output`,
    "vector" (B, K) logits where a head declares none; pipeline/tasks/ `Task.head_output`)."""

    def output(name: str) -> str:
        return str(getattr(head_spec(name), "output", "vector"))

    if output(head) != task.head_output:
        fitting = [h for h in head_names() if output(h) == task.head_output]
        raise ConfigError(
            f"--head {head} outputs a {output(head)} per image, but data set {dataset!r} is a {task.name} task, "
            f"trained on a {task.head_output}: use --head {' or '.join(fitting) if fitting else '(none registered)'}"
        )


def head_config_of(head: str, options: dict[str, Any]) -> dict[str, Any]:
    """The head's identity (name + every declared option), or a ConfigError naming the option's CLI flag."""
    try:
        spec = head_spec(head)
    except KeyError:
        raise ConfigError(f"--head {head!r}: known heads are {', '.join(head_names())}") from None
    try:
        return spec.config(options)
    except HeadOptionError as exc:
        flag = next((spec.flag(o) for o in spec.options if o.name == exc.option), None)
        where = f"--{flag} {exc.value}" if flag else f"head option {exc.option}={exc.value!r}"
        raise ConfigError(f"{where} ({head} option {exc.option}): {exc.reason}") from None


def run_folder(workspace: Workspace, dataset: str, backbone: str, head: str, config: ProbeConfig) -> RunFolder:
    """The run's folder: the head's own at its default options and the default probe settings, else one beside
    it named by the configuration's tag (pipeline/runs/layout.py)."""
    config = with_head_lrs(config, head)
    tag = configuration_tag(head_config_of(head, config.head_options), config.identity())
    return RunFolder.of(workspace, dataset, backbone, head, config.label_fraction, tag)


def configuration_tag(head_config: dict[str, Any], identity: dict[str, Any]) -> str:
    """'' for the head's default options with the default probe settings (ProbeConfig()); else what differs
    from them (head options first, by their short names) and a hash of the whole configuration. The label
    fraction has a sub-folder of its own; OUTPUT_SETTINGS change what a run writes, not its head, and are left
    out (a rerun that changes only them replaces the run, with --force)."""
    spec = head_spec(head_config["name"])
    head, head_default = _plain(head_config), _plain(spec.config())
    probe, probe_default = _plain(identity), _plain(with_head_lrs(ProbeConfig(), head_config["name"]).identity())
    for values in (probe, probe_default):
        for name in ("label_fraction", *OUTPUT_SETTINGS):
            values.pop(name, None)
    shorts = spec.shorts()
    differences: list[tuple[str, object]] = []
    for mine, default, short in ((head, head_default, shorts), (probe, probe_default, PROBE_SHORT)):
        for name in [*default, *(n for n in mine if n not in default)]:  # declared order (run.json sorts keys)
            if mine.get(name) != default.get(name):
                differences.append((short.get(name, name), mine.get(name)))
    return config_tag(differences, {"head": head, "config": probe})


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """`values` as run.json holds them (tuples as lists), so a record's configuration compares to a fresh one."""
    return json.loads(json.dumps(values, default=str))


def _move_misplaced_run(ws: Workspace, dataset: str, backbone: str, head: str, fraction: float) -> None:
    """Before run folders were named by configuration, every run of a head shared `<head>/`: a finished run of
    another configuration found there moves into its own folder (unless that one is finished too), so the
    default configuration's run and it live side by side and neither is rerun."""
    base = RunFolder.of(ws, dataset, backbone, head, fraction)
    if not base.has(RECORD_FILE):
        return
    with folder_lock(base.root, "probe run folder"):
        record = _previous_record(base)
        if record is None or record.head != head:
            return
        try:
            tag = configuration_tag(record.head_config, record.config)
        except (KeyError, TypeError, ValueError):  # a record of an unknown head or a damaged configuration
            return
        target = RunFolder.of(ws, dataset, backbone, head, fraction, tag)
        if not tag or target.has(RECORD_FILE):
            return
        with folder_lock(target.root, "probe run folder"):
            entries = [e for e in base.root.iterdir() if not e.name.startswith(".") and parse_fraction(e.name) is None]
            for entry in sorted(entries, key=lambda e: e.name == RECORD_FILE):  # run.json last: it marks complete
                destination = target.root / entry.name
                if destination.is_dir():
                    shutil.rmtree(destination)
                entry.replace(destination)
        log.warning("%s: moved its run (another configuration) to %s; run folders are named by configuration",
                    base.root, target.root)  # fmt: skip


def with_head_lrs(config: ProbeConfig, head: str) -> ProbeConfig:
    """The head's own lr grid (heads.registry: the segmentation heads') when the probe was given the paper's."""
    lrs = head_spec(head).lrs if head in head_names() else ()
    return dataclasses.replace(config, lrs=tuple(lrs)) if lrs and tuple(config.lrs) == PAPER_LRS else config


def resolve_backbone(workspace: Workspace, backbone: str | None) -> str:
    """The named backbone, else the workspace's default, else the only feature store (StoreError otherwise)."""
    from pipeline.workspace_stores import choose_store

    return choose_store(workspace, backbone)


def _schedule(data: ProbeData, config: ProbeConfig) -> tuple[int, int]:
    probe = data.card.probe or {}
    epochs = config.epochs or int(probe.get("epochs", DEFAULT_EPOCHS))
    batch_size = config.batch_size or int(probe.get("batch_size", DEFAULT_BATCH_SIZE))
    return epochs, batch_size


def _factory(head: str, store: FeatureStore, n_outputs: int, options: dict[str, Any]):
    projection = _basis_of(store)  # heads read projected tokens natively (docs/architecture.md)
    grid = store.layout.grid  # heads that lay the tokens out on the grid (segmentation) take it
    return lambda: build_head(
        head, dim=store.dim, n_layers=store.n_layers, n_outputs=n_outputs, projection=projection, grid=grid, **options
    )


def _basis_of(store: FeatureStore) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A projected store's (mean, basis) as float32 tensors, shared by every head of a sweep; None otherwise."""
    projection = store.projection
    if projection is None:
        if store.layout.rank:
            raise StoreError(f"{store.path} is a projected store without its basis; rerun the command that made it")
        return None
    return torch.from_numpy(projection.mean).float(), torch.from_numpy(projection.stored_basis).float()


def _previous_record(folder: RunFolder) -> RunRecord | None:
    try:
        return read_record(folder.root)
    except RunRecordError as exc:  # an older or damaged record: the run is redone
        log.warning("%s", exc)
        return None


def _refuse_other_configuration(
    folder: RunFolder, previous: RunRecord | None, head_config: dict[str, Any], config: ProbeConfig, force: bool
) -> None:
    """A run folder is named by data set, backbone, head and label fraction only: never replace a finished run of
    another head or probe configuration silently (new data or features, though, are simply rerun)."""
    if previous is None or force:
        return
    mine = {"head_config": head_config, "config": config.identity()}
    theirs = {"head_config": previous.head_config, "config": previous.config}
    changes = [
        f"{part}.{name}: {theirs[part].get(name)!r} there, {mine[part].get(name)!r} now"
        for part in mine
        for name in sorted(set(mine[part]) | set(theirs[part]))
        if json.dumps(mine[part].get(name), default=str) != json.dumps(theirs[part].get(name), default=str)
    ]
    if changes:
        raise ConfigError(
            f"{folder.root} holds a finished run with other settings ({'; '.join(changes)}); rerun with --force "
            "to replace it, or move that folder out of results/ to keep it"
        )


def _run_key(dataset, backbone, head_config, config, epochs, batch_size, store, data) -> str:
    manifest_hash = int(pd.util.hash_pandas_object(data.manifest, index=False).sum()) & (2**63 - 1)
    store_identity = {
        k: store.attrs.get(k) for k in ("checkpoint_sha256", "layers", "dtype", "preprocessing", "created")
    }
    payload = dict(dataset=dataset, backbone=backbone, head=head_config, config=config.identity(), epochs=epochs,
                   batch_size=batch_size, store=store_identity, manifest=manifest_hash)  # fmt: skip
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _summary_from(folder: RunFolder, run: RunRecord, skipped: bool) -> RunSummary:
    from pipeline.tasks import task_of_run

    sweep = pd.read_parquet(folder / SWEEP_FILE).to_dict("records")
    task = task_of_run(folder.root, run)
    return RunSummary(
        val_name=task.score_name,
        test_name=f"test {task.headline_name}",
        dataset=run.dataset,
        backbone=run.backbone,
        head=run.head,
        label_fraction=float(run.label_fraction),
        folder=folder.root,
        chosen_lr=float(run.chosen_lr),
        val_macro_auroc=float(run.val_macro_auroc),
        test_macro_auroc=float(run.test_macro_auroc),
        skipped=skipped,
        seconds=float(run.timings.get("total_s", 0.0)) if not skipped else 0.0,
        sweep=sweep,
    )


def _versions() -> dict[str, str]:
    import sklearn

    return {"chex": pipeline.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "pandas": pd.__version__, "sklearn": sklearn.__version__, "python": platform.python_version()}  # fmt: skip
