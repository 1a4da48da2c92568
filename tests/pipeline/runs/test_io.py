"""Reading run tables: text as categories gives the same numbers as plain text (issue 15, `chex stats` memory)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import ConfigError, PredictionsError
from pipeline.runs import StatsConfig, evaluate_tables, read_table
from tests.pipeline.stats.conftest import make_scores, predictions_frame


def test_categorical_read_evaluates_to_the_same_results(tmp_path):
    labels, scores, patients = make_scores(3)
    test = predictions_frame(labels, scores, patients)
    val = predictions_frame(*make_scores(4), split="val")
    frame = pd.concat([test.iloc[::-1], val], ignore_index=True)  # shuffled order, two splits in one file
    path = tmp_path / "predictions.parquet"
    frame.to_parquet(path, index=False)
    plain = read_table(path)
    coded = read_table(path, text_as_categories=True)
    assert isinstance(coded["image_id"].dtype, pd.CategoricalDtype)
    assert list(coded.columns) == list(plain.columns)
    config = StatsConfig.for_run(None, n_resamples=50)
    a = evaluate_tables(plain, None, None, {"finding_3": "no positives"}, config, "quantile")
    b = evaluate_tables(coded, None, None, {"finding_3": "no positives"}, config, "quantile")
    pd.testing.assert_frame_equal(a, b)
    assert a["estimate"].notna().sum() > 20


def test_duplicate_rows_are_named_with_their_count(tmp_path):
    labels, scores, patients = make_scores(5, n=20)
    frame = predictions_frame(labels, scores, patients)
    frame = pd.concat([frame, frame.iloc[[7, 3]]], ignore_index=True)
    frame.to_parquet(tmp_path / "p.parquet", index=False)
    named = r"2 duplicate \(image_id, output\) rows, e\.g\. \(syn_\d+_1, finding_3\)"
    with pytest.raises(PredictionsError, match=named):
        evaluate_tables(read_table(tmp_path / "p.parquet", True), None, None, {}, StatsConfig.for_run(None), "score")


def test_absent_and_unreadable_tables(tmp_path):
    assert read_table(tmp_path / "none.parquet") is None
    (tmp_path / "bad.parquet").write_bytes(np.arange(10).tobytes())
    with pytest.raises(ConfigError, match=r"bad\.parquet as Parquet"):
        read_table(tmp_path / "bad.parquet", text_as_categories=True)
