"""Small synthetic test sets shared by the statistics tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def make_scores(seed: int, n: int = 240, prevalences=(0.3, 0.15, 0.5, 0.08), missing: float = 0.1, decimals: int = 2):
    """labels (n, K) with NaNs, rounded scores (ties) that carry signal, and patient ids (1-3 images each)."""
    rng = np.random.default_rng(seed)
    k = len(prevalences)
    labels = (rng.random((n, k)) < np.asarray(prevalences)).astype(float)
    scores = np.round(np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0, 1), decimals)
    labels[rng.random((n, k)) < missing] = np.nan
    patients = np.repeat(np.arange(n), rng.integers(1, 4, n))[:n]
    return labels, scores, patients


def predictions_frame(labels, scores, patients, split="test", outputs=None, **run) -> pd.DataFrame:
    n, k = labels.shape
    outputs = outputs or [f"finding_{j}" for j in range(k)]
    ids = [f"syn_{p}_{i}" for i, p in enumerate(patients)]
    identity = {"dataset": "syn", "backbone": "vit_s", "head": "linear", "label_fraction": 1.0, **run}
    return pd.DataFrame(
        {
            **{key: [value] * (n * k) for key, value in identity.items()},
            "seed": 0,
            "lr": 1e-3,
            "image_id": np.repeat(ids, k),
            "patient_id": np.repeat([f"p{p}" for p in patients], k),
            "split": split,
            "output": np.tile(outputs, n),
            "score": scores.ravel(),
            "label": labels.ravel(),
        }
    )


@pytest.fixture
def scored():
    return make_scores(0)
