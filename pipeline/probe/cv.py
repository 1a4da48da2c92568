"""`chex probe --cv K --cv-repeats R`: repeated patient-level stratified K-fold cross-validation, for small sets.

Every labelled image (the manifest's train, val and test pooled) is held out once per repeat. Folds are drawn per
repeat by pipeline/splits.py (patients whole, stratified by finding) with seed `seed + r`; each fold's remaining
patients carve their own stratified val split for the lr choice, and the refit on train + val predicts the fold.
The run's predictions hold one row per (repeat, image, output) with the repeat's seed and the fold; the statistics
(pipeline/runs/passes.py) evaluate each repeat's pooled out-of-fold predictions and give AUROC/AUPRC the corrected
repeated-CV t interval.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import ConfigError
from pipeline.probe.data import ProbeData, carve_patients
from pipeline.splits import stratified_patient_parts

if TYPE_CHECKING:
    from pipeline.probe.protocol import ProbeStage, SeedRun


def fold_of_positions(patients: np.ndarray, labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index (0..k-1) of every position: patients whole, stratified by finding."""
    unique = np.unique(patients)
    if len(unique) < k:
        raise ConfigError(f"--cv {k}: the data set has {len(unique)} patients; give at most that many folds")
    parts = stratified_patient_parts(patients, labels, {str(i): 1.0 / k for i in range(k)}, seed, base="")
    return np.array([int(parts[str(p)]) for p in patients], dtype=np.int64)


def fold_data(data: ProbeData, folds: np.ndarray, fold: int, seed: int, val_fraction: float) -> ProbeData:
    """The ProbeData of one fold: test = the fold, val carved (stratified) from the rest, train = the rest."""
    patients = data.manifest["patient_id"].astype(str).to_numpy()
    pool = np.flatnonzero(folds != fold)
    strata = data.task.strata(data.labels)
    carved = carve_patients(patients[pool], val_fraction, seed, None if strata is None else strata[pool])
    is_val = np.isin(patients, carved) & (folds != fold)
    split = np.where(folds == fold, "test", np.where(is_val, "val", "train"))
    val = np.flatnonzero(split == "val")
    notes = {**data.notes, "val_split": f"carved from the fold's training patients ({val_fraction:.0%}, seed {seed})"}
    return dataclasses.replace(
        data,
        manifest=data.manifest.assign(split=split),
        train=np.flatnonzero(split == "train"),
        val=val,
        refit_val=val,
        test=np.flatnonzero(split == "test"),
        notes=notes,
    )


def run_cv(stage: ProbeStage, data: ProbeData, partial: Path, timings: dict[str, float]) -> list[SeedRun]:
    """Every fold of every repeat through the protocol (`stage.run`); one SeedRun per fold."""
    config = stage.config
    patients = data.manifest["patient_id"].astype(str).to_numpy()
    runs = []
    for r in range(config.cv_repeats):
        seed = config.seed + r
        folds = fold_of_positions(patients, data.task.strata(data.labels), config.cv_folds, seed)
        for fold in range(config.cv_folds):
            one = fold_data(data, folds, fold, seed, config.val_fraction)
            runs.append(stage.run(one, seed, partial, f"-r{r}f{fold}", timings, fold=fold))
    return runs
