"""Segmentation metrics: Dice and IoU per structure per image, their mean with a patient-level bootstrap 95% CI,
and the paired permutation test between two runs on the same test images (issue 24).

Dice = 2|A∩B| / (|A| + |B|), IoU = |A∩B| / |A∪B|, computed at the mask's resolution. An image where both the
prediction and the truth are empty scores 1 (nothing to find, nothing found). The mean over test images gets a
cluster bootstrap CI: patients are drawn with replacement (`pipeline.stats.bootstrap.resample_indices`, the
same draws the classification CIs use), and a resample's mean is the image-weighted mean over the drawn
patients' images (a patient drawn twice counts twice), so images of one patient move together.

`paired_permutation`: two runs' per-image scores of the same images; under the null the two runs are exchangeable
per patient, so a permutation swaps a patient's two scores, which flips the sign of that patient's summed
difference. The statistic is the image mean of (A - B); p is two-sided with the Phipson-Smyth +1, or exact (every
swap pattern) when 2**patients <= n_permutations, as pipeline/stats/permutation.py does for AUROC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from pipeline.stats.bootstrap import counts_from_indices, resample_indices
from pipeline.stats.permutation import _swap_patterns, smallest_p

SEG_METRICS = ("dice", "iou")


def overlap_scores(pred: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """(Dice, IoU) of two boolean masks of the same shape."""
    pred, true = np.asarray(pred, dtype=bool), np.asarray(true, dtype=bool)
    if pred.shape != true.shape:
        raise ValueError(f"prediction {pred.shape} and mask {true.shape} differ in shape")
    inter = int(np.count_nonzero(pred & true))
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(true))
    if total == 0:
        return 1.0, 1.0
    return 2.0 * inter / total, inter / (total - inter)


def image_scores(
    predictions: Sequence[Mapping[str, np.ndarray]],
    truths: Sequence[Mapping[str, np.ndarray]],
    image_ids: Sequence[str],
    patient_ids: Sequence[str],
) -> pd.DataFrame:
    """One row per image and structure of the truth: image_id, patient_id, structure, dice, iou."""
    rows = []
    for pred, true, image, patient in zip(predictions, truths, image_ids, patient_ids, strict=True):
        for structure, mask in true.items():
            if structure not in pred:
                raise KeyError(f"image {image}: no prediction for structure {structure!r}")
            dice, iou = overlap_scores(pred[structure], mask)
            rows.append((str(image), str(patient), structure, dice, iou))
    return pd.DataFrame(rows, columns=["image_id", "patient_id", "structure", *SEG_METRICS])


def bootstrap_mean(
    values: np.ndarray, clusters: np.ndarray, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float, float, np.ndarray]:
    """(mean, CI low, CI high, replicates) of the image mean of `values` under a cluster (patient) bootstrap;
    NaN values are left out of every mean."""
    values = np.asarray(values, dtype=np.float64)
    _, units = np.unique(np.asarray(clusters), return_inverse=True)
    n_units = int(units.max()) + 1 if len(units) else 0
    known = ~np.isnan(values)
    unit_sum = np.bincount(units[known], weights=values[known], minlength=n_units)
    unit_count = np.bincount(units[known], minlength=n_units).astype(np.float64)
    estimate = float(unit_sum.sum() / unit_count.sum()) if unit_count.sum() else float("nan")
    replicates = np.empty(n_resamples)
    done = 0
    for indices in resample_indices(n_units, n_resamples, seed=seed):
        counts = counts_from_indices(indices, n_units).astype(np.float64)  # (n_units, chunk)
        with np.errstate(invalid="ignore", divide="ignore"):
            replicates[done : done + indices.shape[0]] = (unit_sum @ counts) / (unit_count @ counts)
        done += indices.shape[0]
    alpha = (1.0 - confidence) / 2.0
    low, high = np.nanpercentile(replicates, [100 * alpha, 100 * (1 - alpha)]) if n_resamples else (np.nan,) * 2
    return estimate, float(low), float(high), replicates


def summarise(scores: pd.DataFrame, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per structure and metric (and over structures, 'mean'): estimate, ci_low, ci_high, n_images, n_patients.

    The over-structures row averages each image's structures first, so it resamples the same patients."""
    rows = []
    per_image = (
        scores.groupby(["image_id", "patient_id"], sort=False, observed=True)[list(SEG_METRICS)].mean().reset_index()
    )
    groups = [(s, g) for s, g in scores.groupby("structure", sort=False, observed=True)] + [("mean", per_image)]
    for structure, group in groups:
        for metric in SEG_METRICS:
            estimate, low, high, _ = bootstrap_mean(
                group[metric].to_numpy(), group["patient_id"].to_numpy(), n_resamples, seed
            )
            rows.append((structure, metric, estimate, low, high, len(group), group["patient_id"].nunique()))
    columns = ["structure", "metric", "estimate", "ci_low", "ci_high", "n_images", "n_patients"]
    return pd.DataFrame(rows, columns=columns)


def paired_permutation(
    scores_a: pd.DataFrame, scores_b: pd.DataFrame, n_permutations: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """Two `image_scores` tables of the same images: per structure (and 'mean') and metric, estimate_a,
    estimate_b, diff (A - B), p_value, n_permutations, exact, n_units (patients), min_p, n_images. Images that
    only one run scored are left out."""
    keys = ["image_id", "patient_id", "structure"]
    joined = scores_a[[*keys, *SEG_METRICS]].merge(scores_b[[*keys, *SEG_METRICS]], on=keys, suffixes=("_a", "_b"))
    per_image = joined.groupby(["image_id", "patient_id"], sort=False, observed=True)[
        [f"{m}_{side}" for m in SEG_METRICS for side in "ab"]
    ].mean()
    groups = [(s, g) for s, g in joined.groupby("structure", sort=False, observed=True)]
    groups += [("mean", per_image.reset_index())]
    rows = []
    for structure, group in groups:
        for metric in SEG_METRICS:
            a, b = group[f"{metric}_a"].to_numpy(float), group[f"{metric}_b"].to_numpy(float)
            p, n_done, exact, n_units = _sign_flip_p(a - b, group["patient_id"].to_numpy(), n_permutations, seed)
            rows.append(
                (structure, metric, float(a.mean()), float(b.mean()), float((a - b).mean()), p, n_done, exact,
                 n_units, smallest_p(n_units, n_done, exact), len(group))
            )  # fmt: skip
    columns = [
        "structure", "metric", "estimate_a", "estimate_b", "diff", "p_value", "n_permutations", "exact", "n_units",
        "min_p", "n_images",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def _sign_flip_p(diff: np.ndarray, clusters: np.ndarray, n_permutations: int, seed: int) -> tuple:
    """(p, permutations done, exact, units) of the two-sided sign-flip test of the image mean of `diff`."""
    _, units = np.unique(clusters, return_inverse=True)
    n_units = int(units.max()) + 1 if len(units) else 0
    unit_sum = np.bincount(units, weights=diff, minlength=n_units)
    observed = abs(unit_sum.sum())
    exact = 2**n_units <= n_permutations
    hits = done = 0
    tolerance = 1e-12 * max(1.0, observed)
    for swapped in _swap_patterns(n_units, n_permutations, seed, exact, chunk=256):
        permuted = np.abs((1.0 - 2.0 * swapped) @ unit_sum)
        hits += int(np.count_nonzero(permuted >= observed - tolerance))
        done += len(swapped)
    p = hits / done if exact else (1 + hits) / (1 + done)
    return float(p), done, exact, n_units
