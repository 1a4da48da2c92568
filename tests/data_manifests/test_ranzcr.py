"""The RANZCR CLiP adapter on small files in Kaggle's layout (train.csv, train_annotations.csv)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from data_manifests.adapters import build_manifest, make_manifest
from data_manifests.adapters.ranzcr import annotations_path
from pipeline.cards import packaged_card
from pipeline.errors import ManifestError
from pipeline.manifest import read_manifest

LABELS = [
    "ETT - Abnormal", "ETT - Borderline", "ETT - Normal", "NGT - Abnormal", "NGT - Borderline",
    "NGT - Incompletely Imaged", "NGT - Normal", "CVC - Abnormal", "CVC - Borderline", "CVC - Normal",
    "Swan Ganz Catheter Present",
]  # fmt: skip
UIDS = [f"1.2.826.0.1.3680043.8.498.{n}" for n in (10001, 10002, 10003, 10004, 10005, 10006)]


def _train_csv(path: Path, rows: list[tuple[str, dict[str, int], str]]) -> Path:
    lines = [",".join(["StudyInstanceUID", *LABELS, "PatientID"])]
    for uid, positives, patient in rows:
        lines.append(",".join([uid, *(str(positives.get(label, 0)) for label in LABELS), patient]))
    path.write_text("\n".join(lines) + "\n")
    return path


def _annotations_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    lines = ["StudyInstanceUID,label,data"] + [f'{uid},{label},"{data}"' for uid, label, data in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def files(tmp_path):
    train = _train_csv(tmp_path / "train.csv", [
        (UIDS[0], {"ETT - Abnormal": 1, "CVC - Normal": 1}, "ec89415d1"),
        (UIDS[1], {"NGT - Incompletely Imaged": 1, "CVC - Borderline": 1}, "ec89415d1"),
        (UIDS[2], {"CVC - Normal": 1, "Swan Ganz Catheter Present": 1}, "bf4c6da3c"),
        (UIDS[3], {}, "3fc1c97e5"),
        (UIDS[4], {"NGT - Normal": 1, "ETT - Normal": 1, "CVC - Normal": 1}, "c31019814"),
        (UIDS[5], {"CVC - Abnormal": 1}, "207685cd1"),
    ])  # fmt: skip
    annotations = _annotations_csv(tmp_path / "train_annotations.csv", [
        (UIDS[0], "ETT - Abnormal", "[[1487, 1279], [1477, 1168], [1499, 1526]]"),
        (UIDS[0], "CVC - Normal", "[[1328, 7], [1347, 101], [1383, 193], [1400, 301]]"),
        (UIDS[4], "NGT - Normal", "[[1560, 0], [1580, 422.5]]"),
    ])  # fmt: skip
    return train, annotations


def test_labels_patients_paths_and_line_counts(files):
    train, annotations = files
    frame = build_manifest("ranzcr", [train, annotations])
    assert list(frame["image_id"]) == UIDS and list(frame["path"]) == [f"{u}.jpg" for u in UIDS]
    assert frame.loc[0, "ETT - Abnormal"] == 1.0 and frame.loc[0, "ETT - Normal"] == 0.0
    assert frame.loc[2, "Swan Ganz Catheter Present"] == 1.0 and frame.loc[3, LABELS].sum() == 0
    assert list(frame["n_lines"]) == [2, 0, 0, 0, 1, 0]
    assert frame.groupby("patient_id")["split"].nunique().max() == 1  # both images of ec89415d1 together
    assert set(frame["split"]) <= {"train", "val", "test"}
    assert packaged_card("ranzcr").labels_for_training(frame).shape == (6, 11)
    assert list(build_manifest("ranzcr", [train])["n_lines"]) == [0] * 6  # annotations are optional


def test_make_manifest_writes_the_line_coordinates_sidecar(files, tmp_path):
    train, annotations = files
    out = tmp_path / "out" / "ranzcr.parquet"
    out.parent.mkdir()
    result = make_manifest("ranzcr", [train, annotations], out)
    manifest = read_manifest(result.manifest_path, packaged_card("ranzcr"))
    assert len(manifest) == 6
    lines = pd.read_parquet(annotations_path(out))
    assert list(lines["label"]) == ["ETT - Abnormal", "CVC - Normal", "NGT - Normal"]
    assert list(lines["x"].iloc[0]) == [1487.0, 1477.0, 1499.0] and list(lines["y"].iloc[2]) == [0.0, 422.5]
    assert annotations_path(out).parent.name == "sidecars"  # not listed as a data set beside the manifest
    assert sorted(p.name for p in out.parent.glob("*.parquet")) == ["ranzcr.parquet"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ((UIDS[0], "ETT - Abnormal", "[[1, 2], [3]]"), "line 2: data"),
        ((UIDS[0], "ETT - Sideways", "[[1, 2]]"), "unknown line label"),
        (("9.9.9", "ETT - Normal", "[[1, 2]]"), "not in train.csv"),
    ],
)
def test_bad_annotations_name_the_row(files, tmp_path, row, message):
    train, _ = files
    bad = _annotations_csv(tmp_path / "bad_annotations.csv", [row])
    with pytest.raises(ManifestError, match=message):
        build_manifest("ranzcr", [train, bad])


def test_bad_labels_and_missing_columns(tmp_path):
    train = _train_csv(tmp_path / "train.csv", [(UIDS[0], {"ETT - Normal": 2}, "p1")])
    with pytest.raises(ManifestError, match="ETT - Normal"):
        build_manifest("ranzcr", [train])
    missing = tmp_path / "labels.csv"
    missing.write_text("StudyInstanceUID,PatientID\n1.2.3,p1\n")
    with pytest.raises(ManifestError, match="missing column"):
        build_manifest("ranzcr", [missing])
    dup = _train_csv(tmp_path / "dup_train.csv", [(UIDS[0], {}, "p1"), (UIDS[0], {}, "p2")])
    with pytest.raises(ManifestError, match="duplicate"):
        build_manifest("ranzcr", [dup])
