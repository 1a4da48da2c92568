from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.cards import packaged_card
from pipeline.errors import ManifestError
from pipeline.manifest import (
    bad_split_mask,
    duplicate_mask,
    empty_mask,
    escapes_root,
    read_manifest,
    split_leaks,
    validate_manifest,
    within_horizon,
    write_manifest,
)
from pipeline.manifest_check import manifest_problems


def _frame(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": [f"img{i}" for i in range(n)],
            "path": [f"p{i // 2}/img{i}.png" for i in range(n)],
            "patient_id": [f"p{i // 2}" for i in range(n)],
            "split": ["train", "train", "val", "val", "test", "test"][:n],
            "Tuberculosis": [1, 0, 0, 1, np.nan, 0],
        }
    )


def test_valid_manifest_round_trips(tmp_path):
    card = packaged_card("shenzhen")
    path = write_manifest(_frame(), tmp_path / "m.parquet", card)
    back = read_manifest(path, card)
    pd.testing.assert_frame_equal(back, _frame(), check_dtype=False)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.assign(image_id=["a", "a", "b", "c", "d", "e"]), "duplicate image_id"),
        (lambda f: f.drop(columns=["split"]), "missing column"),
        (lambda f: f.assign(Tuberculosis=[1, 0, 2, 1, 0, 0]), "outside {1, 0, -1, NaN}"),
        (lambda f: f.assign(split=["train", "test", "val", "val", "test", "test"]), "more than one split"),
        (lambda f: f.assign(path=["../x.png", "a.png", "b.png", "c.png", "d.png", "e.png"]), "outside the image root"),
        (lambda f: f.assign(split=["train", "train", "valid", "valid", "test", "test"]), "split must be one of"),
    ],
)
def test_bad_manifests_name_the_rows(mutate, message):
    with pytest.raises(ManifestError) as info:
        validate_manifest(mutate(_frame()), packaged_card("shenzhen"), source="m.parquet")
    assert message in str(info.value)
    assert "m.parquet" in str(info.value)


def test_within_horizon_labels_censored_as_unknown():
    labels = within_horizon(np.array([1.0, 5.0, 13.0, 3.0]), np.array([1, 0, 1, 1]), horizon=12)
    np.testing.assert_array_equal(labels, [1.0, np.nan, 0.0, 1.0])


def test_uncertain_policy_is_applied_for_training():
    card = packaged_card("chexpert")
    frame = pd.DataFrame({c: [1.0, -1.0, np.nan, 0.0] for c in card.label_columns})
    labels = card.labels_for_training(frame)
    assert labels.shape == (4, 5)
    np.testing.assert_array_equal(labels[:, 0], [1.0, np.nan, np.nan, 0.0])


def test_split_leaks_name_patients_in_first_seen_order_and_mark_all_their_rows():
    frame = _frame().assign(
        patient_id=["b", "a", "b", "c", "a", "d"], split=["train", "val", "test", "test", "val", "test"]
    )
    names, rows = split_leaks(frame["patient_id"], frame["split"])
    assert names == ["b"]
    assert rows.tolist() == [True, False, True, False, False, False]
    frame.loc[5, "patient_id"] = "a"  # a: val, val, test
    names, rows = split_leaks(frame["patient_id"], frame["split"])
    assert names == ["b", "a"]
    assert rows.tolist() == [True, True, True, False, True, True]


def test_column_rules_on_numbers_missing_values_and_mixed_types():
    ids = pd.Series([1, "1", 2, None, "", 3], dtype=object)  # 1 and "1" are the same text: a duplicate
    assert empty_mask(ids).tolist() == [False, False, False, True, True, False]
    assert duplicate_mask(ids).tolist() == [True, True, False, False, False, False]
    assert duplicate_mask(pd.Series(["a", "b", "a", None, None])).tolist() == [True, False, True, False, False]
    assert duplicate_mask(pd.Series([1, 2, 3])).tolist() == [False, False, False]
    assert escapes_root(pd.Series(["a/b.png", "/abs.png", "C:\\x.png", "a\\..\\b.png", None, "..x/y"])).tolist() == [
        False, True, True, True, False, False,
    ]  # fmt: skip
    assert bad_split_mask(pd.Series(["train", "valid", None, "test"])).tolist() == [False, True, True, False]


def test_every_problem_at_once_agrees_with_the_first_problem_rule():
    """`chex manifest validate` lists what `validate_manifest` stops at: the same rules, row for row."""
    broken = _frame().assign(
        image_id=["a", "a", "b", "c", "d", "e"],
        split=["train", "test", "val", "val", "test", "test"],
        path=["../x.png", "a.png", "b.png", "c.png", "d.png", "e.png"],
    )
    problems = manifest_problems(broken, packaged_card("shenzhen"))
    assert [p.split(" at ")[0] for p in problems] == [
        "1 duplicate image_id value(s)",
        "path outside the image root",
        "1 patient(s) in more than one split (e.g. ['p0'])",
    ]
    assert "rows 0, 1" in problems[0] and "row 0 " in problems[1] and "rows 0, 1" in problems[2]
