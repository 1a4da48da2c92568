"""Simple pixel statistics and a held-out logistic regression: the learnability yardstick of the cohort."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

GRID = 8


def pixel_features(paths: list[Path]) -> np.ndarray:
    """Per image: 8x8 regional means, and the standard deviation and maximum of the high-pass image per region."""
    rows = []
    for path in paths:
        with Image.open(path) as im:
            pixels = np.asarray(im, dtype=np.float64)
        pixels = pixels / (65535.0 if pixels.max() > 255 else 255.0)
        h, w = pixels.shape
        cells = pixels[: h - h % GRID, : w - w % GRID].reshape(GRID, h // GRID, GRID, w // GRID)
        means = cells.mean(axis=(1, 3))
        blurred = np.repeat(np.repeat(means, h // GRID, 0), w // GRID, 1)
        high = (pixels[: h - h % GRID, : w - w % GRID] - blurred).reshape(GRID, h // GRID, GRID, w // GRID)
        rows.append(np.concatenate([means.ravel(), high.std(axis=(1, 3)).ravel(), high.max(axis=(1, 3)).ravel()]))
    return np.asarray(rows)


def heldout_auroc(features: np.ndarray, labels: np.ndarray, train: np.ndarray) -> float:
    """AUROC on the non-train rows of an L2 logistic regression fit on the train rows (NaN/-1 labels dropped)."""
    known = np.isin(labels, (0.0, 1.0))
    fit, evaluate = train & known, ~train & known
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    model.fit(features[fit], labels[fit])
    return float(roc_auc_score(labels[evaluate], model.predict_proba(features[evaluate])[:, 1]))


def manifest_features(root: Path, manifest: pd.DataFrame) -> np.ndarray:
    return pixel_features([root / p for p in manifest["path"]])


def chance_se(labels: np.ndarray, train: np.ndarray) -> float:
    """Standard error of a held-out AUROC under the null (Mann-Whitney: sqrt((n1+n0+1) / (12 n1 n0)))."""
    held = labels[~train]
    n1, n0 = int((held == 1).sum()), int((held == 0).sum())
    return float(np.sqrt((n1 + n0 + 1) / (12.0 * n1 * n0)))
