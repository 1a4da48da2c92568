"""The cohort plan: patients, splits, which findings each image shows, the labels, the survival outcomes.

Everything random here comes from one generator per data set (cheap draws); the expensive part, rendering,
uses one generator per patient (see render.py), so images can be made in parallel and reproducibly.

Pixels always show the "truth" draw. Labels are the truth, except in the null cohort, where labels (and the
latent features the survival times depend on) are an independent draw with the same prevalences: the same
pixels, labels unrelated to them.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.manifest import within_horizon
from pipeline.synth.specs import COMMON_PREVALENCE, NORMAL, SynthSpec
from pipeline.synth.survival import SurvivalModel, simulate_survival

IMAGE_PRESENCE = 0.85  # a patient's finding shows on each later image with this probability
AP_FRACTION = 0.2
BLANK_RATE = 0.02  # CheXpert-like blank (not mentioned) labels in train


@dataclass
class CohortPlan:
    """Per image (rows of `images`) and per patient (rows of `patients`) everything needed to render and label."""

    dataset: str
    findings: list[str]  # drawn finding columns (card columns without the derived Normal)
    background: list[str]  # painted, never labelled
    patients: pd.DataFrame  # patient_id, split, n_images, z_heart, z_frailty (+ survival columns)
    images: pd.DataFrame  # image_id, patient_index, k, view, split, shown (list of finding names)
    labels: pd.DataFrame  # manifest label (and survival) columns, aligned with `images`


def dataset_code(name: str) -> int:
    """A stable integer for a data set name (seeds must not depend on Python's hash randomisation)."""
    return zlib.crc32(name.encode())


def make_plan(spec: SynthSpec, n_images: int, seed: int, null: bool, force_rare: bool) -> CohortPlan:
    rng = np.random.default_rng([seed, dataset_code(spec.name), 0])
    null_rng = np.random.default_rng([seed, dataset_code(spec.name), 1])  # the null draws: pixels stay the same
    counts = _images_per_patient(n_images, spec.images_per_patient, rng)
    n_patients = len(counts)
    split = _assign_splits(n_patients, spec.split_fractions, rng)
    findings = list(spec.prevalence)
    prevalence = np.array([spec.prevalence[f] for f in findings])
    groups = _group_columns(findings, spec.exclusive)
    truth = _draw_findings(prevalence, split, force_rare, rng, groups)
    background = list(spec.background_prevalence)
    bg = rng.random((n_patients, len(background))) < np.array([spec.background_prevalence[b] for b in background])
    latents = rng.normal(size=(n_patients, 2))

    patient_ids = [f"{spec.name}_p{i:05d}" for i in range(n_patients)]
    patients = pd.DataFrame(
        {
            "patient_id": patient_ids,
            "split": split,
            "n_images": counts,
            "z_heart": latents[:, 0],
            "z_frailty": latents[:, 1],
        }
    )
    patient_index = np.repeat(np.arange(n_patients), counts)
    k = np.concatenate([np.arange(c) for c in counts])
    # Per-image variation: a patient's finding is on the first image, and on later ones most of the time.
    keep = (k == 0)[:, None] | (rng.random((len(k), len(findings))) < IMAGE_PRESENCE)
    shown = truth[patient_index] & keep
    bg_shown = bg[patient_index]
    views = np.where(rng.random(len(k)) < AP_FRACTION, "AP", "PA")
    labelled, label_latents = shown, latents
    if null:
        label_draw = _draw_findings(prevalence, split, force_rare, null_rng, groups)
        label_keep = (k == 0)[:, None] | (null_rng.random((len(k), len(findings))) < IMAGE_PRESENCE)
        labelled = label_draw[patient_index] & label_keep
        label_latents = null_rng.normal(size=(n_patients, 2))
    names = np.array(findings + background, dtype=object)
    shown_all = np.concatenate([shown, bg_shown], axis=1)
    images = pd.DataFrame(
        {
            "image_id": [f"{patient_ids[p]}_{j}" for p, j in zip(patient_index, k, strict=True)],
            "patient_index": patient_index,
            "k": k,
            "view": views,
            "split": split[patient_index],
            "shown": [list(names[row]) for row in shown_all],
        }
    )
    labels = pd.DataFrame(labelled.astype(np.float64), columns=findings)
    if spec.derived_normal:
        labels[NORMAL] = (~labelled.any(axis=1)).astype(np.float64)
    if spec.uncertain_rate > 0:
        _add_uncertain(labels, images["split"].to_numpy() == "train", spec.uncertain_rate, rng)
    if spec.survival:
        outcomes = simulate_survival(label_latents, rng, SurvivalModel())
        for column in outcomes.columns:
            patients[column] = outcomes[column].to_numpy()
        per_image = outcomes.iloc[patient_index].reset_index(drop=True)
        for column in ("time_cvd_years", "death_cvd", "time_all_years", "death_all"):
            labels[column] = per_image[column].to_numpy()
        horizon = 12.0
        labels["death_cvd_12y"] = within_horizon(per_image["time_cvd_years"], per_image["death_cvd"], horizon)
        labels["death_all_12y"] = within_horizon(per_image["time_all_years"], per_image["death_all"], horizon)
    return CohortPlan(spec.name, findings, background, patients, images, labels)


def _images_per_patient(n_images: int, mean: float, rng: np.random.Generator) -> np.ndarray:
    if mean <= 1.0:
        return np.ones(n_images, dtype=np.int64)
    counts = 1 + rng.poisson(mean - 1.0, size=int(n_images / mean) + 16)
    counts = np.minimum(counts, 8)
    total = np.cumsum(counts)
    n = int(np.searchsorted(total, n_images)) + 1
    counts = counts[:n].copy()
    counts[-1] -= int(total[n - 1] - n_images)
    return counts[counts > 0]


def _assign_splits(n_patients: int, fractions: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    order = rng.permutation(n_patients)
    split = np.empty(n_patients, dtype=object)
    names = [s for s in ("train", "val", "test") if s in fractions]
    sizes = [round(fractions[s] * n_patients) for s in names[1:]]
    sizes = [max(1, s) if n_patients >= 2 * len(names) else s for s in sizes]
    start = n_patients - sum(sizes)
    split[order[:start]] = "train"
    for name, size in zip(names[1:], sizes, strict=True):
        split[order[start : start + size]] = name
        start += size
    return split


def _draw_findings(
    prevalence: np.ndarray,
    split: np.ndarray,
    force_rare: bool,
    rng: np.random.Generator,
    groups: list[list[int]] | None = None,
):
    """Patient x finding Bernoulli draws, then a minimum number of positive patients per split: a few for
    common findings always, and for every finding when `force_rare` (and the split is big enough). In each
    exclusive group (column indices) a patient keeps at most one finding, and the added positives go to
    patients with none of the group."""
    drawn = rng.random((len(split), len(prevalence))) < prevalence
    groups = groups or []
    drawn = _exclusive(drawn, prevalence, groups)
    group_of = {j: group for group in groups for j in group}
    for name in ("train", "val", "test"):
        members = np.flatnonzero(split == name)
        if len(members) == 0:
            continue
        for j, p in enumerate(prevalence):
            common = p >= COMMON_PREVALENCE
            if common:
                wanted = 3
            elif force_rare:
                wanted = {"train": 3, "val": 1, "test": 2}[name]
            else:
                continue
            wanted = min(wanted, len(members) // (2 if common else 4))
            have = int(drawn[members, j].sum())
            if have < wanted:
                free = members[~drawn[members][:, group_of.get(j, [j])].any(axis=1)]
                drawn[rng.choice(free, size=min(wanted - have, len(free)), replace=False), j] = True
    return drawn


def _group_columns(findings: list[str], groups: tuple[tuple[str, ...], ...]) -> list[list[int]]:
    return [[findings.index(name) for name in group] for group in groups]


def _exclusive(drawn: np.ndarray, prevalence: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    """At most one finding of each exclusive group per patient: the rarest drawn one. Draws no random numbers."""
    for columns in groups:
        by_rarity = sorted(columns, key=lambda j: (prevalence[j], j))
        taken = np.zeros(len(drawn), dtype=bool)
        for j in by_rarity:
            drawn[:, j] &= ~taken
            taken |= drawn[:, j]
    return drawn


def _add_uncertain(labels: pd.DataFrame, train: np.ndarray, rate: float, rng: np.random.Generator) -> None:
    """CheXpert-like train labels: some become -1 (uncertain) and a few blank (NaN)."""
    for column in labels.columns:
        u = rng.random(len(labels))
        values = labels[column].to_numpy().copy()
        values[train & (u < rate)] = -1.0
        values[train & (u >= rate) & (u < rate + BLANK_RATE)] = np.nan
        labels[column] = values
