"""Predictions whose labels or scores are not numbers are refused by name, never read as missing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import PredictionsError
from tests.faults.conftest import assert_user_error, run_chex


def _predictions(labels) -> pd.DataFrame:
    n = len(labels)
    return pd.DataFrame(
        {"image_id": [f"i{k}" for k in range(n)], "output": "A", "score": np.linspace(0, 1, n), "label": labels}
        | {"patient_id": [f"p{k}" for k in range(n)], "split": "test"}
    )


def test_string_labels_are_refused_naming_column_and_values():
    from pipeline.stats.evaluate import evaluate_predictions

    frame = _predictions(["positive", "negative"] * 5)
    with pytest.raises(PredictionsError, match=r"label.*'negative'.*'positive'"):
        evaluate_predictions(frame, n_resamples=10)
    frame = _predictions([1, 0] * 5).astype({"score": object})
    frame.loc[3, "score"] = "high"
    with pytest.raises(PredictionsError, match=r"score.*'high'"):
        evaluate_predictions(frame, n_resamples=10)


def test_chex_stats_exits_2_on_string_labels(tmp_path):
    path = tmp_path / "predictions.parquet"
    _predictions(["positive", "negative"] * 5).to_parquet(path)
    assert_user_error(run_chex("stats", path, "--resamples", "10"), "label", "positive")
