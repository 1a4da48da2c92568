from __future__ import annotations

import pandas as pd

from pipeline.corpus.contamination import EvalSet, find_leaks


def _corpus() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source": ["mimic_cxr", "mimic_cxr", "mimic_cxr", "chexpert", "chexpert", "padchest"],
            "source_patient_id": ["p1", "p2", "p9", "p2", "p3", "p4"],
            "content_hash": ["h_test", "hA", "hB", "hC", "h_test2", "hD"],
            "phash": [
                "0000000000000000",
                "ffff000000000000",
                "00000000000000ff",
                "0f0f0f0f0f0f0f0f",
                "1111111111111111",
                "0000000000000003",  # 2 bits from the test image's pHash: a near copy
            ],
        }
    )


def _test_split() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": ["t1", "t2", "t3"],
            "patient_id": ["p2", "p7", "p8"],
            "content_hash": ["h_test", "h_test2", None],
            "phash": ["0000000000000000", "1111111111111111", None],
        }
    )


def test_image_and_patient_leaks_are_found_and_nothing_else():
    eval_set = EvalSet("cxrlt24", _test_split(), patient_sources=("mimic_cxr",))
    leaks = find_leaks(_corpus(), [eval_set])
    assert leaks[["row", "reason", "eval_image_id"]].values.tolist() == [
        [0, "image", "t1"],
        [1, "patient", None],  # p2 is a test patient of a set sharing MIMIC's ids ...
        [4, "image", "t2"],  # ... but chexpert's p2 (row 3) is another person: not dropped
    ]
    assert set(leaks["eval_set"]) == {"cxrlt24"}


def test_near_leaks_are_reported_with_a_threshold():
    eval_set = EvalSet("cxrlt24", _test_split())
    leaks = find_leaks(_corpus(), [eval_set], near_threshold=2)
    by_row = dict(zip(leaks["row"], leaks["reason"], strict=True))
    assert by_row == {0: "image", 4: "image", 5: "near_image"}
    assert find_leaks(_corpus(), [eval_set], near_threshold=1)["row"].tolist() == [0, 4]


def test_no_eval_sets_no_leaks():
    leaks = find_leaks(_corpus(), [])
    assert leaks.empty and list(leaks.columns) == ["row", "eval_set", "reason", "eval_image_id"]
