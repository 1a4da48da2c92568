from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.cards import packaged_card
from pipeline.errors import ManifestError
from pipeline.manifest import read_manifest, validate_manifest, within_horizon, write_manifest


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
