"""What a probe trains on: the manifest's labels and splits, label-fraction subsets, and the features.

Splits: the manifest's train/val/test (per patient). A data set without a val split gets one carved out of
train by patient (seeded, stratified by finding with both classes in val where train allows: pipeline/splits.py):
lr selection never looks at test. Label efficiency keeps a seeded fraction of the
train (and, for the refit, val) patients; the subsets are nested (1% within 10% within 100%).

Features (`Features`) are read from the store either once into memory (when they fit the cache budget) or
streamed chunk by chunk on every epoch; training batches can draw one of K stored augmented views per image.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from pipeline.cards import DatasetCard, read_card
from pipeline.errors import ConfigError, StoreError
from pipeline.manifest import read_manifest
from pipeline.splits import stratified_patient_parts
from pipeline.store import FeatureStore
from pipeline.workspace import Workspace

if TYPE_CHECKING:
    from pipeline.tasks.base import Task

log = logging.getLogger(__name__)

MAX_EXAMPLES = 5


@dataclass
class ProbeData:
    """A data set ready to probe: manifest rows, the task's targets (classification: the label matrix (N, K)),
    NaN = masked, and split positions."""

    dataset: str
    card: DatasetCard
    manifest: pd.DataFrame
    outputs: list[str]
    labels: np.ndarray
    train: np.ndarray  # positions into manifest rows (label fraction applied)
    val: np.ndarray  # full validation split (lr selection)
    refit_val: np.ndarray  # validation rows added to the refit (label fraction applied)
    test: np.ndarray
    notes: dict[str, str] = field(default_factory=dict)
    task: Task | None = None  # the card's task kind (pipeline/tasks/); None: classification
    root: Path | None = None  # the workspace's folder (where a task's tables find masks and the like)

    def __post_init__(self) -> None:
        if self.task is None:
            from pipeline.tasks import task_named

            self.task = task_named("classification")

    @property
    def image_ids(self) -> np.ndarray:
        return self.manifest["image_id"].astype(str).to_numpy()


def load_probe_data(
    workspace: Workspace,
    dataset: str,
    seed: int = 0,
    label_fraction: float = 1.0,
    val_fraction: float = 0.1,
    store: FeatureStore | None = None,
) -> ProbeData:
    """Read the data set's manifest and card from the workspace and lay out its splits; the card chooses the task
    (pipeline/tasks/), whose targets may read the `store`'s grid and crop."""
    from pipeline.tasks import task_for_card

    card = read_card(workspace, dataset)
    task = task_for_card(card)
    manifest = read_manifest(workspace.manifest_path(dataset), card).reset_index(drop=True)
    if not task.outputs(card):
        raise ConfigError(f"data set card of {dataset!r} names no label columns; nothing to probe")
    data = prepare_probe_data(dataset, card, manifest, seed, label_fraction, val_fraction, task, store)
    data.root = workspace.root
    return data


def prepare_probe_data(
    dataset: str,
    card: DatasetCard,
    manifest: pd.DataFrame,
    seed: int = 0,
    label_fraction: float = 1.0,
    val_fraction: float = 0.1,
    task: Task | None = None,
    store: FeatureStore | None = None,
) -> ProbeData:
    """Splits, label subsets and the task's targets (default: the card's) of an already validated manifest."""
    from pipeline.tasks import task_for_card

    task = task or task_for_card(card)
    if not 0.0 < label_fraction <= 1.0:
        raise ConfigError(f"--label-fraction {label_fraction}: must be in (0, 1]")
    notes: dict[str, str] = {}
    split = manifest["split"].astype(str).to_numpy().copy()
    patients = manifest["patient_id"].astype(str).to_numpy()
    labels = task.targets(card, manifest, store)
    strata = task.strata(labels)
    if not (split == "val").any():
        in_train = split == "train"
        carved = carve_patients(patients[in_train], val_fraction, seed, None if strata is None else strata[in_train])
        split[np.isin(patients, carved) & in_train] = "val"
        notes["val_split"] = (
            f"carved from train: {len(carved)} patients ({val_fraction:.0%}, seed {seed}, stratified by finding)"
        )
        log.info("%s has no val split; %s", dataset, notes["val_split"])
    else:
        notes["val_split"] = "manifest"
    for name in ("train", "test"):
        if not (split == name).any():
            raise ConfigError(f"data set {dataset!r} has no {name} images; its manifest needs a {name} split")
    train = np.flatnonzero(split == "train")
    val = np.flatnonzero(split == "val")
    refit_val = val
    if label_fraction < 1.0:
        train = train[np.isin(patients[train], subsample_patients(patients[train], label_fraction, seed))]
        refit_val = val[np.isin(patients[val], subsample_patients(patients[val], label_fraction, seed))]
        notes["label_fraction"] = (
            f"{label_fraction:g} of train patients ({len(np.unique(patients[train]))} patients, {len(train)} images); "
            f"lr chosen on the full val split; refit adds {len(refit_val)} val images (same fraction)"
        )
    frame = manifest.assign(split=split)
    return ProbeData(
        dataset=dataset,
        card=card,
        manifest=frame,
        outputs=list(task.outputs(card)),
        labels=labels,
        train=train,
        val=val,
        refit_val=refit_val,
        test=np.flatnonzero(split == "test"),
        notes=notes,
        task=task,
    )


def carve_patients(patients: np.ndarray, fraction: float, seed: int, labels: np.ndarray | None = None) -> np.ndarray:
    """A seeded `fraction` (at least one) of the distinct patients, for a validation split: stratified by finding,
    with a positive and a negative of each finding wherever train has two of that class (pipeline/splits.py)."""
    unique = np.unique(patients)
    if len(unique) < 2:
        raise ConfigError("cannot carve a validation split out of a train split with fewer than 2 patients")
    parts = stratified_patient_parts(patients, labels, {"train": 1.0 - fraction, "val": fraction}, seed)
    carved = np.array(sorted(p for p, name in parts.items() if name == "val"), dtype=unique.dtype)
    if len(carved) == 0:  # a tiny fraction of few patients: at least one
        carved = np.random.default_rng([seed, 1]).choice(unique, size=1, replace=False)
    if len(carved) == len(unique):
        carved = carved[:-1]
    return carved


def subsample_patients(patients: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The first ceil(fraction·n) patients of one seeded permutation, so smaller fractions nest in larger."""
    unique = np.unique(patients)
    order = np.random.default_rng([seed, 2]).permutation(len(unique))
    return unique[order[: max(1, math.ceil(fraction * len(unique)))]]


def outputs_without_both_classes(labels: np.ndarray, outputs: Sequence[str]) -> dict[str, str]:
    """Outputs whose known labels lack positives or negatives: output -> reason."""
    out = {}
    for k, name in enumerate(outputs):
        column = labels[:, k]
        if not (column == 1).any():
            out[name] = "no positive labels"
        elif not (column == 0).any():
            out[name] = "no negative labels"
    return out


def check_in_store(store: FeatureStore, image_ids: Sequence[str], dataset: str, backbone: str) -> None:
    """StoreError with a count, examples and the embed command when some images are not in the store."""
    have = set(store.image_ids[store.views == 0])
    missing = [i for i in image_ids if i not in have]
    if missing:
        raise StoreError(
            f"{len(missing)} of {len(image_ids)} images of data set {dataset!r} are not in feature store "
            f"{store.path} (e.g. {missing[:MAX_EXAMPLES]}); embed them with "
            f"`chex embed {dataset} --backbone {backbone}` (plus the --checkpoint or --random-init it was made with)"
        )
    foreign = store.foreign_images(image_ids, dataset)
    if foreign:  # the same ids, embedded for another data set: maybe other pixels (pipeline/store/content.py)
        examples = [f"{i!r} ({owner})" for i, owner in list(foreign.items())[:MAX_EXAMPLES]]
        raise StoreError(
            f"{len(foreign)} of {len(image_ids)} images of data set {dataset!r} are in feature store {store.path} "
            f"only as images of another data set, e.g. {', '.join(examples)}; their pixels were never checked "
            f"against {dataset!r}'s. Run `chex embed {dataset} --backbone {backbone}` (plus the --checkpoint or "
            "--random-init it was made with): it reuses the rows of identical images and refuses other ones"
        )


@dataclass(frozen=True)
class Standardizer:
    """`--standardize`: per part, a per-feature mean and SD (over the token axes of one image: CLS (L, D), patch
    tokens (L, D) shared by every patch) fitted on the train split; tokens become (x - mean) / SD."""

    mean: dict[str, torch.Tensor]
    std: dict[str, torch.Tensor]

    def apply(self, tokens: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {p: (t.float() - self.mean[p]) / self.std[p] if p in self.mean else t for p, t in tokens.items()}


def fit_standardizer(features: Features, positions: np.ndarray, batch_size: int = 256) -> Standardizer:
    """Mean and SD of every feature over the view-0 tokens of `positions` (the train split only), in float64; an
    SD below 1e-6 of the largest one counts as 1 (a constant feature is centred, not blown up)."""
    features.standardizer = None
    sums: dict[str, torch.Tensor] = {}
    squares: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    for _, tokens in features.batches(np.asarray(positions), batch_size, shuffle=False):
        for part, t in tokens.items():
            x = t.double()
            if part == "patch":  # (B, L, P, D): every patch position counts as one sample of its layer's features
                x = x.transpose(1, 2).reshape(-1, *x.shape[1:2], x.shape[-1])
            sums[part] = sums.get(part, 0) + x.sum(dim=0)
            squares[part] = squares.get(part, 0) + (x * x).sum(dim=0)
            counts[part] = counts.get(part, 0) + x.shape[0]
    mean, std = {}, {}
    for part in sums:
        m = sums[part] / counts[part]
        var = (squares[part] / counts[part] - m * m).clamp_min(0)
        sd = var.sqrt()
        sd = torch.where(sd < 1e-6 * sd.max().clamp_min(1e-30), torch.ones_like(sd), sd)
        shape = (m.shape[0], 1, m.shape[1]) if part == "patch" else m.shape  # broadcast over the patch axis
        mean[part], std[part] = m.reshape(shape).float(), sd.reshape(shape).float()
    return Standardizer(mean, std)


class Features:
    """Store rows of a list of images, cached in memory when they fit `cache_bytes`, else streamed per batch.

    Row table `rows` (V, N): the store row of view v of image n, -1 where the image has fewer views (only
    training images usually have augmented views; view 0 is the plain eval view every image has).
    """

    def __init__(
        self,
        store: FeatureStore,
        image_ids: Sequence[str],
        parts: Sequence[str],
        max_views: int = 1,
        cache_bytes: int = 2 << 30,
    ) -> None:
        self.store = store
        self.parts = tuple(parts)
        ids = [str(i) for i in image_ids]
        self.image_ids = ids
        counts = view_counts(store, ids) if max_views > 1 else np.ones(len(ids), dtype=np.int64)
        self.views_per_image = np.minimum(counts, max_views)
        self.rows = np.full((int(self.views_per_image.max(initial=1)), len(ids)), -1, dtype=np.int64)
        for v in range(self.rows.shape[0]):
            have = np.flatnonzero(self.views_per_image > v)
            self.rows[v, have] = store.rows([ids[k] for k in have], view=v)
        per_row = 4 * sum(math.prod(store.layout.token_shape(p)) for p in self.parts)
        present = self.rows >= 0
        self.nbytes = per_row * int(present.sum())
        self.cached: dict[str, torch.Tensor] | None = None
        self.standardizer: Standardizer | None = None  # --standardize: applied to every batch it yields
        if self.nbytes <= cache_bytes:
            self._slot = np.full(self.rows.shape, -1, dtype=np.int64)
            self._slot[present] = np.arange(int(present.sum()))
            self.cached = store.read(self.rows[present], self.parts)
            check_finite(store, self.cached, [ids[k] for k in np.nonzero(present)[1]])
            log.info("features cached in memory: %d rows, %.1f MB", int(present.sum()), self.nbytes / 1e6)
        else:
            log.info("features streamed from the store: %d rows, %.2f GB", int(present.sum()), self.nbytes / 1e9)

    def batches(
        self, positions: np.ndarray, batch_size: int, shuffle: bool = False, seed: int = 0, sample_views: bool = False
    ) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
        """(positions, tokens) batches over `positions` (indices into the image list); tokens per `parts`,
        standardised when a `standardizer` is set.

        With `sample_views`, each image contributes one of its views, drawn anew per call (i.e. per epoch).
        """
        standardizer = self.standardizer
        for batch_pos, tokens in self._batches(positions, batch_size, shuffle, seed, sample_views):
            yield batch_pos, standardizer.apply(tokens) if standardizer is not None else tokens

    def _batches(
        self, positions: np.ndarray, batch_size: int, shuffle: bool, seed: int, sample_views: bool
    ) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
        positions = np.asarray(positions, dtype=np.int64)
        rng = np.random.default_rng([seed, 3])
        views = np.zeros(len(positions), dtype=np.int64)
        if sample_views:
            views = (rng.random(len(positions)) * self.views_per_image[positions]).astype(np.int64)
        if self.cached is not None:
            order = rng.permutation(len(positions)) if shuffle else np.arange(len(positions))
            for start in range(0, len(order), batch_size):
                take = order[start : start + batch_size]
                slots = torch.from_numpy(self._slot[views[take], positions[take]])
                yield positions[take], {p: self.cached[p].index_select(0, slots) for p in self.parts}
            return
        rows = self.rows[views, positions]
        sorter = np.argsort(rows)
        for batch_rows, tokens in self.store.iter_batches(rows, batch_size, self.parts, shuffle=shuffle, seed=seed):
            batch_positions = positions[sorter[np.searchsorted(rows, batch_rows, sorter=sorter)]]
            check_finite(self.store, tokens, [self.image_ids[k] for k in batch_positions])
            yield batch_positions, tokens


def check_finite(store: FeatureStore, tokens: dict[str, torch.Tensor], image_ids: Sequence[str]) -> None:
    """StoreError naming the images (and the store) whose features hold inf or NaN: a head never meets them."""
    for part, values in tokens.items():
        bad = ~torch.isfinite(values.reshape(len(values), -1)).all(dim=1)
        if bad.any():
            ids = sorted({image_ids[k] for k in torch.nonzero(bad).flatten().tolist()})
            raise StoreError(
                f"feature store {store.path}: {len(ids)} images have non-finite {part} features (inf/NaN), e.g. "
                f"{ids[:MAX_EXAMPLES]}; no head can train on them. Re-embed them into a new store (`chex embed "
                "... --backbone NEW_NAME`; with --dtype float32 when the backbone exceeds float16's range)"
            )


def view_counts(store: FeatureStore, image_ids: Sequence[str]) -> np.ndarray:
    """Number of consecutive views 0..k-1 each image has in the store."""
    frame = pd.DataFrame({"image_id": store.image_ids.astype(str), "view": store.views})
    frame = frame[frame["image_id"].isin(set(image_ids))]
    have = frame.groupby("image_id")["view"].agg(lambda v: _consecutive(set(v)))
    return have.reindex(list(image_ids)).fillna(0).to_numpy(dtype=np.int64)


def _consecutive(views: set[int]) -> int:
    k = 0
    while k in views:
        k += 1
    return k
