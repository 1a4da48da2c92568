"""Predictions scored at the mask's resolution, within the crop the model saw.

A prediction is a (K, T, T) probability map on the model's input square. `InputMap.sample` reads it at the
centre of every mask pixel the input covered (pipeline/masks/align.py), the probability >= `threshold` is the
predicted mask, and Dice / IoU compare it with the mask's own pixels there. The table keeps the pixel counts
(intersection, predicted, true, scored pixels) beside Dice and IoU, so any overlap metric can be recomputed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.embed.preprocess import Preprocessing
from pipeline.masks.align import input_map
from pipeline.masks.workspace import read_structures

SCORE_COLUMNS = ("image_id", "patient_id", "structure", "intersection", "predicted", "true", "pixels", "dice", "iou")


def score_maps(
    maps: torch.Tensor | Sequence[torch.Tensor],
    image_ids: Sequence[str],
    patient_ids: Sequence[str],
    root: Path,
    dataset: str,
    structures: Sequence[str],
    pre: Preprocessing,
    threshold: float = 0.5,
) -> pd.DataFrame:
    """One row per image and structure (SCORE_COLUMNS). `maps`: (N, K, T, T) uint8 probabilities x 255, or one
    (K, T, T) map used for every image (the prior row)."""
    rows = []
    for n, (image_id, patient_id) in enumerate(zip(image_ids, patient_ids, strict=True)):
        truth = read_structures(root, dataset, str(image_id), structures)
        prob = maps if isinstance(maps, torch.Tensor) and maps.dim() == 3 else maps[n]
        rows += score_image(prob, truth, pre, structures, str(image_id), str(patient_id), threshold)
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))


def score_image(
    prob: torch.Tensor,
    truth: np.ndarray,
    pre: Preprocessing,
    structures: Sequence[str],
    image_id: str,
    patient_id: str,
    threshold: float = 0.5,
) -> list[tuple]:
    """Rows of SCORE_COLUMNS for one image: `prob` (K, T, T) (uint8 x 255 or float in [0, 1]), `truth` (K, H, W)."""
    imap = input_map(pre, truth.shape[-2], truth.shape[-1])
    rows, cols = imap.covered()
    scale = 255.0 if prob.dtype == torch.uint8 else 1.0
    pred = (imap.sample(prob.float() / scale) >= threshold).numpy()
    true = truth[:, rows, cols]
    out = []
    for k, name in enumerate(structures):
        inter = int(np.count_nonzero(pred[k] & true[k]))
        n_pred, n_true = int(np.count_nonzero(pred[k])), int(np.count_nonzero(true[k]))
        total = n_pred + n_true
        dice, iou = (2.0 * inter / total, inter / (total - inter)) if total else (1.0, 1.0)
        out.append((image_id, patient_id, name, inter, n_pred, n_true, int(true[k].size), dice, iou))
    return out
