"""`chex manifest custom|folder --labels-from-subdirs|validate`: bringing a labelled data set (issue 16, item 1)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from data_manifests.adapters.custom import CustomOptions, SurvivalSpec, build_custom, labels_from_subdirs
from pipeline.cards import card_beside, load_card
from pipeline.cli import app
from pipeline.errors import ConfigError, ManifestError
from pipeline.manifest import read_manifest
from pipeline.manifest_check import manifest_problems
from pipeline.workspace import Workspace

runner = CliRunner()


def _images(root, names):
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), 100, dtype=np.uint8)).save(root / name)


def _table(n=40):
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "path": [f"img{i}.png" for i in range(n)],
        "patient_id": [f"p{i // 2}" for i in range(n)],
        "Effusion": rng.integers(0, 2, n).astype(float),
        "Nodule": rng.choice([1.0, 0.0, -1.0, np.nan], n),
        "age": rng.integers(20, 80, n),
        "followup": rng.uniform(0, 10, n),
        "died": rng.integers(0, 2, n),
    })  # fmt: skip


def test_tasks_are_inferred_and_the_split_is_seeded_and_per_patient():
    options = CustomOptions(survival=[SurvivalSpec.parse("followup:died:5")], ignore=["age"], seed=3)
    frame, card, notes = build_custom("mine", _table(), options)
    assert [t.kind for t in card.tasks] == ["multilabel", "survival"]
    assert card.tasks[0].columns == ("Effusion", "Nodule")
    assert card.tasks[1].columns == ("died_within_5y",) and card.tasks[1].horizon_years == 5
    assert "age" not in frame.columns
    assert frame.groupby("patient_id")["split"].nunique().max() == 1
    assert set(frame["split"]) == {"train", "val", "test"}
    again, _, _ = build_custom("mine", _table(), options)
    assert again["split"].tolist() == frame["split"].tolist()  # seeded
    assert any("split at random" in n for n in notes)


def test_one_finding_is_a_binary_task_and_split_names_are_normalised():
    table = pd.DataFrame({"path": ["a.png", "b.png"], "patient_id": ["1", "2"], "split": ["Train", "valid"],
                          "TB": [1, 0]})  # fmt: skip
    frame, card, _ = build_custom("tb", table, CustomOptions())
    assert card.tasks[0].kind == "binary" and frame["split"].tolist() == ["train", "val"]


def test_patient_regex_derives_patients_from_file_names():
    table = pd.DataFrame({"path": ["x/person12_a.jpeg", "x/person12_b.jpeg", "person7_c.jpeg"], "Pneumonia": [1, 1, 0]})
    frame, _, _ = build_custom("peds", table, CustomOptions(patient_regex=r"person(\d+)"))
    assert frame["patient_id"].tolist() == ["12", "12", "7"]
    with pytest.raises(ConfigError, match="matches no patient"):
        build_custom("peds", table, CustomOptions(patient_regex=r"patient(\d+)"))


def test_bad_finding_values_name_every_bad_column():
    table = _table()
    table.loc[3, "Effusion"] = 2.0
    with pytest.raises(ManifestError) as err:
        build_custom("mine", table, CustomOptions())  # age, followup and died are not 1/0/-1 findings
    message = str(err.value)
    for column in ("'Effusion'", "'age'", "'followup'"):
        assert column in message
    assert "--survival" in message and "--ignore" in message


def test_labels_from_subdirs_binary_with_a_normal_class_and_one_hot_otherwise(tmp_path):
    _images(tmp_path / "a", ["NORMAL/x1.png", "NORMAL/x2.png", "PNEUMONIA/y1.jpeg"])
    table = labels_from_subdirs(tmp_path / "a")
    assert list(table.columns) == ["path", "PNEUMONIA"]
    assert table["PNEUMONIA"].tolist() == [0.0, 0.0, 1.0]
    _images(tmp_path / "b", ["cat/1.png", "dog/2.png", "owl/3.png"])
    assert list(labels_from_subdirs(tmp_path / "b").columns) == ["path", "cat", "dog", "owl"]


def test_validate_reports_every_problem_at_once(tmp_path):
    frame, card, _ = build_custom("mine", _table(8), CustomOptions(ignore=["age", "followup", "died"]))
    frame.loc[1, "image_id"] = frame.loc[0, "image_id"]  # duplicate id
    frame.loc[2, "split"] = "training-set"  # bad split name
    frame.loc[5, "split"] = "test" if frame.loc[4, "split"] != "test" else "train"  # p2 in two splits
    frame.loc[6, "Effusion"] = 2.0  # bad label
    _images(tmp_path, [f"img{i}.png" for i in range(7)])  # img7.png missing
    problems = manifest_problems(frame, card, tmp_path)
    text = "\n".join(problems)
    assert len(problems) == 5, text
    for expected in ("duplicate image_id", "split must be one of", "more than one split", "'Effusion'", "missing"):
        assert expected in text


def test_custom_cli_writes_manifest_and_card_with_root_and_prints_tasks(tmp_path):
    images = tmp_path / "images"
    _images(images, [f"img{i}.png" for i in range(40)])
    labels = tmp_path / "labels.csv"
    _table().to_csv(labels, index=False)
    ws = Workspace(tmp_path / "ws")
    result = runner.invoke(
        app, ["manifest", "custom", "mine", "--labels", str(labels), "--root", str(images), "--survival",
              "followup:died", "--ignore", "age", "--workspace", str(ws.root)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "task findings (multilabel): Effusion" in result.output and "survival" in result.output
    card = load_card(ws.card_path("mine"))
    assert card.image_root == str(images.resolve()) and ws.image_root("mine") == images.resolve()
    read_manifest(ws.manifest_path("mine"), card)
    ok = runner.invoke(app, ["manifest", "validate", "mine", "--workspace", str(ws.root)])
    assert ok.exit_code == 0 and "OK" in ok.output


def test_validate_cli_exits_2_listing_all_problems(tmp_path):
    images = tmp_path / "images"
    _images(images, ["a.png"])
    ws = Workspace(tmp_path / "ws")
    table = pd.DataFrame(
        {"path": ["a.png", "b.png"], "patient_id": ["1", "1"], "split": ["train", "test"], "TB": [1, 0]}
    )
    labels = tmp_path / "labels.csv"
    table.to_csv(labels, index=False)
    made = runner.invoke(
        app, ["manifest", "custom", "tb", "--labels", str(labels), "--root", str(images), "--workspace", str(ws.root)]
    )
    assert made.exit_code == 2  # nothing is written while a problem remains
    assert "2 problem(s)" in made.output and "more than one split" in made.output and "missing" in made.output
    assert not ws.manifest_path("tb").exists()


def test_shard_refuses_a_label_outside_the_card(tmp_path):
    # a label 2.0 passed `chex shard` and failed only at probe time
    images = tmp_path / "images"
    _images(images, [f"img{i}.png" for i in range(4)])
    ws = Workspace(tmp_path / "ws")
    table = pd.DataFrame({"path": [f"img{i}.png" for i in range(4)], "patient_id": list("abcd"),
                          "split": ["train", "train", "val", "test"], "TB": [1, 0, 1, 0]})  # fmt: skip
    frame, card, _ = build_custom("tb", table, CustomOptions())
    frame.loc[0, "TB"] = 2.0
    ws.manifests_dir.mkdir(parents=True)
    frame.to_parquet(ws.manifest_path("tb"))  # written by hand, as a user would
    card.save(ws.card_path("tb"))
    assert card_beside(ws.manifest_path("tb")) == card
    result = runner.invoke(app, ["shard", "tb", "--root", str(images), "--quiet", "--workspace", str(ws.root)])
    assert result.exit_code == 2 and "'TB'" in result.output and "2.0" in result.output


def test_folder_without_labels_is_a_pretraining_source_and_with_labels_a_data_set(tmp_path):
    _images(tmp_path / "imgs", ["normal/a1.png", "normal/a2.png", "sick/b1.png", "sick/b2.png"])
    ws = Workspace(tmp_path / "ws")
    base = ["manifest", "folder", "peds", "--root", str(tmp_path / "imgs"), "--workspace", str(ws.root)]
    assert runner.invoke(app, base).exit_code == 0
    assert (ws.root / "corpus" / "sources" / "peds.parquet").is_file() and ws.datasets() == []
    result = runner.invoke(app, [*base, "--labels-from-subdirs", "--split-fractions", "0.5,0,0.5"])
    assert result.exit_code == 0, result.output
    assert ws.datasets() == ["peds"] and load_card(ws.card_path("peds")).label_columns == ["sick"]


def test_unknown_data_set_says_how_to_make_one():
    from pipeline.cards import packaged_card

    with pytest.raises(ConfigError, match="chex manifest custom peds"):
        packaged_card("peds")


# ---- issue 26: Kermany-style names, one pass over every problem, spreadsheet lines, Mac zip debris ---------------

KERMANY = {  # as in the Kermany et al. pediatric pneumonia folders
    "NORMAL": ["IM-0115-0001.jpeg", "IM-0115-0002.jpeg", "IM-0117-0001.jpeg", "NORMAL2-IM-1427-0001.jpeg"],
    "PNEUMONIA": ["person1_bacteria_1.jpeg", "person1_virus_6.jpeg", "person10_virus_35.jpeg", "scan_0042.jpeg"],
}


def test_patients_without_a_regex_match_fall_back_to_their_own_id_loudly(caplog):
    paths = [f"{label}/{name}" for label, names in KERMANY.items() for name in names]
    table = pd.DataFrame({"path": paths, "PNEUMONIA": [0.0] * 4 + [1.0] * 4})
    frame, card, notes = build_custom("peds", table, CustomOptions(patient_regex=r"person(\d+)"))
    patients = dict(zip(frame["path"], frame["patient_id"], strict=True))
    assert patients["PNEUMONIA/person1_bacteria_1.jpeg"] == patients["PNEUMONIA/person1_virus_6.jpeg"] == "1"
    assert patients["NORMAL/IM-0115-0001.jpeg"] == "NORMAL/IM-0115-0001.jpeg"  # its own id
    note = next(n for n in notes if "no patient match" in n)
    assert "5 of 8" in note and "IM-0115-0001.jpeg" in note and note in card.notes
    assert r"'person(\d+)'" in note  # as typed: one backslash
    assert r"person(\\d+)" not in " ".join(card.notes) + caplog.text
    assert "no patient match" in caplog.text

    frame, _, notes = build_custom("peds", table, CustomOptions(patient_regex=r"(person\d+|IM-\d+)"))
    patients = dict(zip(frame["path"], frame["patient_id"], strict=True))
    assert patients["NORMAL/IM-0115-0001.jpeg"] == patients["NORMAL/IM-0115-0002.jpeg"] == "IM-0115"
    assert patients["NORMAL/NORMAL2-IM-1427-0001.jpeg"] == "IM-1427"
    assert patients["PNEUMONIA/person10_virus_35.jpeg"] == "person10"
    assert "1 of 8" in next(n for n in notes if "no patient match" in n)  # scan_0042.jpeg


def test_custom_csv_lists_every_problem_at_once_with_spreadsheet_lines(tmp_path):
    images = tmp_path / "images"
    names = [f"img{i}.png" for i in range(20)]
    _images(images, [n for n in names if n != "img17.png"])  # data row 17 = spreadsheet line 19
    table = pd.DataFrame({"path": names, "patient_id": [f"p{i}" for i in range(20)], "Pneumonia": ["1", "0"] * 10})
    table.loc[3, "Pneumonia"] = "yes"  # line 5
    labels = tmp_path / "labels.csv"
    table.to_csv(labels, index=False)
    ws = Workspace(tmp_path / "ws")
    result = runner.invoke(
        app, ["manifest", "custom", "peds", "--labels", str(labels), "--root", str(images), "-w", str(ws.root)]
    )
    text = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "2 problem(s)" in text, text
    assert "'Pneumonia'" in text and "'yes'" in text and "line 5" in text
    assert "missing" in text and "line 19" in text and "path='img17.png'" in text
    assert "row 17" not in text and "header is line 1" in text
    assert not ws.manifest_path("peds").exists()


def test_class_folders_skip_mac_and_hidden_entries_and_say_so(tmp_path):
    root = tmp_path / "chest_xray"
    _images(root, [f"{label}/{name}" for label, names in KERMANY.items() for name in names])
    _images(root, ["__MACOSX/NORMAL/._IM-0115-0001.jpeg", "NORMAL/._IM-0117-0001.jpeg", ".hidden/x.png"])
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "NORMAL" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    table = labels_from_subdirs(root)
    assert list(table.columns) == ["path", "PNEUMONIA"] and len(table) == 8
    assert not table["path"].str.contains("MACOSX|/\\._").any()
    _, card, notes = build_custom("peds", table, CustomOptions())
    note = next(n for n in notes if "skipped" in n)
    assert "__MACOSX" in note and ".DS_Store" in note and note in card.notes
