"""Stratified patient-level splits: every part gets its share of each finding's positives, and a val or test part
holds both classes of each finding wherever the patients allow it.

Used when a data set has no split of its own (`chex manifest custom` without a split column), when the probe carves
a validation split out of train, and by `chex probe --cv` for its folds. A patient is one unit (all its images go
to one part); its stratum is the rarest finding it is positive for (by patient count), or "no positive". Within a
stratum, seeded positions spread the patients over the parts in proportion to their fractions (systematic
sampling with a random start), so each part's count of a stratum is within one of its share. A fix-up then moves
one patient from the largest part into any other part that lacks a positive (or a negative) of a finding, while
the largest part keeps at least one of that class.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def patient_classes(patients: Sequence[str], labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sorted unique patients, positive (P, K), negative (P, K)): a patient is positive for a finding when any of
    its images is labelled 1, negative when none is 1 and one is 0 (NaN and other values are unknown)."""
    patients = np.asarray([str(p) for p in patients])
    unique, codes = np.unique(patients, return_inverse=True)
    if labels is None or labels.size == 0:
        empty = np.zeros((len(unique), 0), dtype=bool)
        return unique, empty, empty
    labels = np.asarray(labels, dtype=np.float64).reshape(len(patients), -1)
    pos = np.zeros((len(unique), labels.shape[1]), dtype=bool)
    zero = np.zeros_like(pos)
    np.logical_or.at(pos, codes, labels == 1)
    np.logical_or.at(zero, codes, labels == 0)
    return unique, pos, zero & ~pos


def stratified_patient_parts(
    patients: Sequence[str], labels: np.ndarray | None, fractions: dict[str, float], seed: int, base: str = "train"
) -> dict[str, str]:
    """patient -> part name, with parts in proportion to `fractions` (see the module docstring); `base` (the
    largest part, usually train) gives up patients in the both-classes fix-up."""
    unique, pos, neg = patient_classes(patients, labels)
    names = [name for name, f in fractions.items() if f > 0]
    shares = np.array([fractions[n] for n in names], dtype=np.float64)
    bounds = np.cumsum(shares / shares.sum())
    rng = np.random.default_rng([seed, 7])
    counts = pos.sum(axis=0)
    rarity = np.where(pos, counts[None, :], np.iinfo(np.int64).max)
    stratum = np.where(pos.any(axis=1), rarity.argmin(axis=1) if pos.shape[1] else -1, -1)
    part = np.empty(len(unique), dtype=np.int64)
    for s in np.unique(stratum):
        members = np.flatnonzero(stratum == s)
        members = members[rng.permutation(len(members))]
        positions = (np.arange(len(members)) + rng.random()) / len(members)
        part[members] = np.minimum(np.searchsorted(bounds, positions, side="right"), len(names) - 1)
    if base in names:
        _both_classes(part, names.index(base), len(names), pos, neg, rng)
    return {str(p): names[k] for p, k in zip(unique, part, strict=True)}


def _both_classes(part: np.ndarray, base: int, n_parts: int, pos: np.ndarray, neg: np.ndarray, rng) -> None:
    """Move single patients from `base` so that every other part holds a positive and a negative of each finding,
    where `base` can spare one (rarest findings first; a move never empties `base` of that class)."""
    order = np.argsort(pos.sum(axis=0), kind="stable")
    for k in order:
        for has in (pos[:, k], neg[:, k]):
            for target in range(n_parts):
                if target == base or (has & (part == target)).any():
                    continue
                donors = np.flatnonzero(has & (part == base))
                if len(donors) < 2:
                    continue
                part[donors[rng.integers(len(donors))]] = target


def split_counts(frame: pd.DataFrame, columns: Sequence[str]) -> dict[str, dict[str, tuple[int, int]]]:
    """split -> column -> (positive images, negative images), for notes and tests."""
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for split, rows in frame.groupby("split", sort=False):
        out[str(split)] = {c: (int((rows[c] == 1).sum()), int((rows[c] == 0).sum())) for c in columns}
    return out
