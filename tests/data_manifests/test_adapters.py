"""Every adapter on small files in the official layout, including the error cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_manifests.adapters import build_manifest, make_manifest
from data_manifests.adapters.common import patient_splits, view_from_filename, view_name
from pipeline.cards import load_card, packaged_card
from pipeline.errors import ConfigError, ManifestError
from pipeline.manifest import read_manifest

CHEXPERT_14 = [
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
]  # fmt: skip


def _chexpert_csv(path: Path, split_dir: str, rows: list[tuple]) -> Path:
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_14]
    lines = [",".join(header)]
    for patient, study, view, fl, appa, labels in rows:
        values = {name: "" for name in CHEXPERT_14} | labels
        image = f"CheXpert-v1.0-small/{split_dir}/patient{patient:05d}/study{study}/view{view}_{fl.lower()}.jpg"
        lines.append(",".join([image, "Female", "68", fl, appa, *(values[n] for n in CHEXPERT_14)]))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def chexpert_files(tmp_path):
    train = _chexpert_csv(tmp_path / "train.csv", "train", [
        (1, 1, 1, "Frontal", "AP", {"Cardiomegaly": "1.0", "Edema": "-1.0", "Atelectasis": "0.0"}),
        (1, 1, 2, "Lateral", "", {"Cardiomegaly": "1.0"}),
        (2, 1, 1, "Frontal", "PA", {"Pleural Effusion": "1.0", "Consolidation": "-1.0"}),
    ])  # fmt: skip
    valid = _chexpert_csv(tmp_path / "valid.csv", "valid", [
        (64541, 1, 1, "Frontal", "AP", {n: "0.0" for n in CHEXPERT_14} | {"Edema": "1.0"}),
    ])  # fmt: skip
    return train, valid


def test_chexpert_columns_labels_views_and_patients(chexpert_files, tmp_path):
    train, valid = chexpert_files
    test = _chexpert_csv(tmp_path / "test_labels.csv", "test", [(64741, 1, 1, "Frontal", "PA", {"Edema": "0.0"})])
    frame = build_manifest("chexpert", [train, valid, test])
    assert list(frame["split"]) == ["train", "train", "train", "val", "test"]
    assert list(frame["patient_id"]) == ["00001", "00001", "00002", "64541", "64741"]
    assert list(frame["view"]) == ["AP", "LATERAL", "PA", "AP", "PA"]
    assert frame["image_id"].iloc[0] == "chexpert_train_patient00001_study1_view1_frontal"
    assert frame["path"].iloc[0] == "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
    assert frame["Cardiomegaly"].iloc[0] == 1.0 and frame["Edema"].iloc[0] == -1.0
    assert frame["Atelectasis"].iloc[0] == 0.0 and np.isnan(frame["Atelectasis"].iloc[2])
    assert frame.loc[3, "Edema"] == 1.0 and frame.loc[3, "Cardiomegaly"] == 0.0
    labels = packaged_card("chexpert").labels_for_training(frame)
    assert np.isnan(labels[0, 3])  # uncertain Edema masked by the card's 'ignore' policy


def test_chexpert_valid_becomes_test_without_a_test_file(chexpert_files):
    frame = build_manifest("chexpert", list(chexpert_files))
    assert sorted(set(frame["split"])) == ["test", "train"]


def test_chexpert_errors_name_file_and_rows(chexpert_files, tmp_path):
    train, _ = chexpert_files
    bad = tmp_path / "train_bad.csv"
    bad.write_text(train.read_text().replace("-1.0", "2.0", 1))
    with pytest.raises(ManifestError, match=r"train_bad.csv: unknown label value.*'Edema'.*line 2:"):
        build_manifest("chexpert", [bad])  # lines as a spreadsheet numbers them: the header is line 1
    spaced = tmp_path / "train_spaced.csv"
    header, *rows = bad.read_text().splitlines()
    spaced.write_text("\n".join([header, "", rows[0], *rows[1:]]) + "\n")
    with pytest.raises(ManifestError, match=r"train_spaced.csv: unknown label value.*'Edema'.*line 3:"):
        build_manifest("chexpert", [spaced])  # a blank line counts as a line; pandas skips it as a row
    missing = tmp_path / "train_cols.csv"
    frame = pd.read_csv(train).drop(columns=["Edema"])
    frame.to_csv(missing, index=False)
    with pytest.raises(ManifestError, match=r"train_cols.csv: missing column\(s\) \['Edema'\]"):
        build_manifest("chexpert", [missing])
    dup = tmp_path / "train_dup.csv"
    lines = train.read_text().splitlines()
    dup.write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(ManifestError, match=r"train_dup.csv: duplicate Path at lines 2, 5"):
        build_manifest("chexpert", [dup])
    leak = _chexpert_csv(tmp_path / "valid.csv", "valid", [(2, 9, 1, "Frontal", "AP", {"Edema": "1.0"})])
    with pytest.raises(ManifestError, match=r"1 patient\(s\) appear in more than one split \(e.g. \['00002'\]\)"):
        build_manifest("chexpert", [train, f"val={leak}", f"test={_chexpert_csv(tmp_path / 't.csv', 'test', [])}"])
    odd = tmp_path / "labels.csv"
    odd.write_text(train.read_text())
    with pytest.raises(ManifestError, match=r"labels.csv: cannot tell which split.*--source test="):
        build_manifest("chexpert", [odd])


def test_write_with_root_reports_missing_images(chexpert_files, tmp_path):
    train, valid = chexpert_files
    root = tmp_path / "root"
    first = root / "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
    first.parent.mkdir(parents=True)
    first.write_bytes(b"x")
    result = make_manifest("chexpert", [train, valid], tmp_path / "ws" / "chexpert.parquet", root=root)
    assert result.missing_count == 2  # the lateral image is left out by the card's view filter
    assert result.relocated == 0
    assert "view2_lateral" not in " ".join(result.missing_examples)
    card = load_card(result.card_path)
    assert result.card_path.name == "chexpert.card.yaml" and not card.synthetic
    assert len(read_manifest(result.manifest_path, card)) == 3
    assert any("left out 1 images {'LATERAL': 1}" in n for n in card.notes)
    assert card.image_root == str(root.resolve())


def _cxr14_files(tmp_path: Path, labels: list[str]) -> list[Path]:
    entry = tmp_path / "Data_Entry_2017.csv"
    header = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    header += "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
    rows = [header]
    for i, label in enumerate(labels):
        patient = i // 2 + 1
        rows.append(
            f"{patient:08d}_{i % 2:03d}.png,{label},{i % 2},{patient:05d},58,M,{'PA' if i % 3 else 'AP'},"
            "2682,2749,0.143,0.143"
        )
    entry.write_text("\n".join(rows) + "\n")
    names = [f"{i // 2 + 1:08d}_{i % 2:03d}.png" for i in range(len(labels))]
    (tmp_path / "train_val_list.txt").write_text("\n".join(names[:4]) + "\n")
    (tmp_path / "test_list.txt").write_text("\n".join(names[4:]) + "\n")
    return [entry, tmp_path / "train_val_list.txt", tmp_path / "test_list.txt"]


def test_cxr14_pipe_labels_official_lists_and_nested_images(tmp_path):
    files = _cxr14_files(
        tmp_path, ["Effusion|Mass", "No Finding", "Hernia", "Pleural_Thickening|Nodule", "Edema", "No Finding"]
    )
    frame = build_manifest("cxr14", files)
    assert list(frame["split"]) == ["train"] * 4 + ["test"] * 2
    assert list(frame["patient_id"]) == ["1", "1", "2", "2", "3", "3"]
    assert frame.loc[0, ["Effusion", "Mass", "Nodule"]].tolist() == [1.0, 1.0, 0.0]
    assert frame.loc[1, packaged_card("cxr14").label_columns].sum() == 0
    assert frame.loc[3, "Pleural_Thickening"] == 1.0 and list(frame["view"][:2]) == ["AP", "PA"]
    root = tmp_path / "images"
    for k, name in enumerate(frame["path"]):
        target = root / f"images_{k % 2 + 1:03d}" / "images" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"x")
    result = make_manifest("cxr14", files, tmp_path / "out.parquet", root=root)
    assert result.relocated == 6 and result.missing_count == 0
    assert result.frame["path"].iloc[1] == "images_002/images/00000001_001.png"
    no_lists = build_manifest("cxr14", files[:1], seed=1)
    assert set(no_lists["split"]) <= {"train", "test"}
    assert no_lists.groupby("patient_id")["split"].nunique().max() == 1


def test_cxr14_errors(tmp_path):
    files = _cxr14_files(tmp_path, ["Effusion", "Pneumonitis", "No Finding", "Mass", "Edema", "Hernia"])
    with pytest.raises(ManifestError, match=r"Data_Entry_2017.csv: unknown finding label.*line 3.*'Pneumonitis'"):
        build_manifest("cxr14", files)
    files = _cxr14_files(tmp_path, ["Effusion", "Mass", "No Finding", "Mass", "Edema", "Hernia"])
    files[2].write_text("00000003_001.png\n")  # one image in no list, and patient 3 in both lists
    with pytest.raises(ManifestError, match=r"in none of the split lists"):
        build_manifest("cxr14", files)
    files[1].write_text("\n".join(["00000001_000.png", "00000001_001.png", "00000002_000.png", "00000002_001.png",
                                   "00000003_000.png"]) + "\n")  # fmt: skip
    with pytest.raises(ManifestError, match=r"1 patient\(s\) appear in more than one split \(e.g. \['3'\]\)"):
        build_manifest("cxr14", files)


def _cxrlt_csv(path: Path, rows: list[tuple[str, int, dict]], path_column: str = "fpath") -> Path:
    findings = packaged_card("cxrlt24").label_columns
    frame = pd.DataFrame(
        [
            {"dicom_id": d, "subject_id": s, "study_id": 50000000 + s, "ViewPosition": "PA",
             path_column: f"files/p{s}/s{50000000 + s}/{d}.jpg"} | {f: labels.get(f, 0) for f in findings}
            for d, s, labels in rows
        ]
    )  # fmt: skip
    frame.to_csv(path, index=False)
    return path


def test_cxrlt24_splits_from_names_and_explicit(tmp_path):
    train = _cxrlt_csv(tmp_path / "train_labeled.csv", [("a1", 10000032, {"Cardiomegaly": 1}), ("a2", 10000032, {})])
    test = _cxrlt_csv(tmp_path / "labels_final.csv", [("b1", 10000764, {"Azygos Lobe": 1})], path_column="path")
    frame = build_manifest("cxrlt24", [train, f"test={test}"])
    assert list(frame["split"]) == ["train", "train", "test"]
    assert list(frame["patient_id"]) == ["10000032", "10000032", "10000764"]
    assert frame.loc[2, "Azygos Lobe"] == 1.0 and frame.loc[0, "Cardiomegaly"] == 1.0
    assert frame.loc[2, "path"] == "files/p10000764/s60000764/b1.jpg" and set(frame["view"]) == {"PA"}
    with pytest.raises(ManifestError, match=r"duplicate image_id"):
        build_manifest("cxrlt24", [train, f"test={train}"])
    broken = tmp_path / "test_broken.csv"
    pd.read_csv(test).drop(columns=["Hernia"]).to_csv(broken, index=False)
    with pytest.raises(ManifestError, match=r"test_broken.csv: missing column\(s\) \['Hernia'\]"):
        build_manifest("cxrlt24", [broken])


def _tb_folder(tmp_path: Path, prefix: str, labels: list[int]) -> Path:
    root = tmp_path / prefix
    (root / "CXR_png").mkdir(parents=True)
    (root / "ClinicalReadings").mkdir()
    for i, label in enumerate(labels, start=1):
        (root / "CXR_png" / f"{prefix}_{i:04d}_{label}.png").write_bytes(b"png")
        text = (
            "male 35yrs\nnormal\n" if prefix == "CHNCXR" else "Patient's Sex: F\nPatient's Age: 044Y\nTB right apex\n"
        )
        (root / "ClinicalReadings" / f"{prefix}_{i:04d}_{label}.txt").write_text(text)
    (root / "CXR_png" / "Thumbs.db").write_bytes(b"")
    return root


@pytest.mark.parametrize(("dataset", "prefix"), [("shenzhen", "CHNCXR"), ("montgomery", "MCUCXR")])
def test_tb_sets_label_from_file_name_and_readings(tmp_path, dataset, prefix):
    labels = [0, 1] * 20
    root = _tb_folder(tmp_path, prefix, labels)
    frame = build_manifest(dataset, [root], seed=0)
    assert len(frame) == 40 and frame["Tuberculosis"].tolist() == [float(v) for v in labels]
    assert frame["path"].iloc[0] == f"CXR_png/{prefix}_0001_0.png"
    assert frame["image_id"].iloc[1] == f"{prefix}_0002_1"
    assert frame["sex"].iloc[0] == ("M" if prefix == "CHNCXR" else "F")
    assert frame["age"].iloc[0] == (35.0 if prefix == "CHNCXR" else 44.0)
    fractions = packaged_card(dataset).paper_splits
    expected_test = round(40 * fractions["test"] / sum(fractions.values()))
    assert abs((frame["split"] == "test").sum() - expected_test) <= 1
    assert build_manifest(dataset, [root], seed=0)["split"].equals(frame["split"])
    assert not build_manifest(dataset, [root], seed=1)["split"].equals(frame["split"])
    stray = tmp_path / f"{prefix}_0001.png"
    stray.write_bytes(b"")
    with pytest.raises(ManifestError, match=f"{prefix}_0001.png: not a {dataset} image name"):
        build_manifest(dataset, [stray])


def test_jsrt_clinical_lists(tmp_path):
    cln = tmp_path / "CLNDAT_EN.txt"
    cln.write_text(
        "JPCLN001.IMG\t3\t15\t54\tmale\t1634\t1903\tmalignant\tlung cancer\tl.upper lobe\n"
        "JPCLN002.IMG\t5\t30\t61\tfemale\t1231\t1011\tbenign\tgranuloma\tr.lower lobe\n"
    )
    cnn = tmp_path / "CNNDAT_EN.txt"
    cnn.write_text("JPCNN001.IMG\t43\tfemale\tnon-nodule\n\nJPCNN002.IMG\t71\tmale\tnon-nodule\n")
    frame = build_manifest("jsrt", [cln, cnn])
    assert frame["image_id"].tolist() == ["JPCLN001", "JPCLN002", "JPCNN001", "JPCNN002"]
    assert frame["Nodule"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert frame["age"].tolist() == [54.0, 61.0, 43.0, 71.0] and frame["sex"].tolist() == ["M", "F", "F", "M"]
    root = tmp_path / "png"
    root.mkdir()
    for name in frame["image_id"]:
        (root / f"{name}.png").write_bytes(b"x")
    result = make_manifest("jsrt", [cln, cnn], tmp_path / "jsrt.parquet", root=root)
    assert result.relocated == 4 and result.missing_count == 0 and result.frame["path"].iloc[0] == "JPCLN001.png"
    wrong = tmp_path / "CNNDAT_bad.txt"
    wrong.write_text("JPCNN001.IMG 43 female\nJPCLN009.IMG 50 male\n")
    with pytest.raises(ManifestError, match=r"CNNDAT_bad.txt line 2: JPCLN009.IMG is a nodule image in the non-nodule"):
        build_manifest("jsrt", [wrong])
    garbage = tmp_path / "CLNDAT_x.txt"
    garbage.write_text("Image name\tsubtlety\n")
    with pytest.raises(ManifestError, match=r"CLNDAT_x.txt line 1: expected an image name"):
        build_manifest("jsrt", [garbage])
    with pytest.raises(ManifestError, match=r"listed more than once"):
        build_manifest("jsrt", [cln, cln])


def _plco_files(tmp_path: Path, causes: list[str]) -> list[Path]:
    subjects = [f"A{i:05d}" for i in range(len(causes))]
    images = tmp_path / "plco_images.csv"
    lines = ["plco_id,image_file_name"]
    for i, s in enumerate(subjects):
        lines += [f"{s},{s}_T0.tif", *([f"{s},{s}_T1.tif"] if i % 2 == 0 else [])]
    images.write_text("\n".join(lines) + "\n")
    mortality = tmp_path / "plco_mortality.csv"
    lines = ["plco_id,is_dead,mortality_exitdays,d_dthicd10"]
    for i, (s, cause) in enumerate(zip(subjects, causes, strict=True)):
        dead = int(cause != "")
        days = 1000 + 500 * i if dead else 6000
        lines.append(f"{s},{dead},{days},{cause}")
    mortality.write_text("\n".join(lines) + "\n")
    return [images, mortality]


def test_plco_survival_columns(tmp_path):
    causes = ["I21.9", "C34.1", "", "I63.9", "", "J44.1"] * 4
    frame = build_manifest("plco", _plco_files(tmp_path, causes))
    assert len(frame) == 36 and frame["image_id"].iloc[0] == "A00000_T0"
    first = frame.groupby("patient_id").first()
    assert first["death_all"].tolist() == [int(c != "") for c in causes]
    assert first["death_cvd"].tolist() == [int(c.startswith("I")) for c in causes]
    assert first["time_all_years"].iloc[0] == pytest.approx(1000 / 365.25)
    assert first["time_all_years"].iloc[2] == pytest.approx(6000 / 365.25)
    assert first["death_all_12y"].iloc[0] == 1.0 and first["death_all_12y"].iloc[2] == 0.0
    late = first["time_all_years"] > 12
    assert (first.loc[late, "death_all_12y"] == 0).all()
    assert frame.groupby("patient_id")["split"].nunique().max() == 1


def test_plco_numeric_causes_need_codes_and_errors(tmp_path):
    files = _plco_files(tmp_path, ["4", "", "7", "4"])
    with pytest.raises(ManifestError, match=r"numeric cause-of-death codes; pass --cvd-codes"):
        build_manifest("plco", files)
    frame = build_manifest("plco", files, cvd_codes=["4"])
    assert frame.groupby("patient_id")["death_cvd"].first().tolist() == [1, 0, 0, 1]
    files[1].write_text(files[1].read_text().replace("A00001,0,6000", "A00001,0,-5"))
    with pytest.raises(ManifestError, match=r"plco_mortality.csv: follow-up days must be a number >= 0 at line 3"):
        build_manifest("plco", files, cvd_codes=["4"])
    files[1].write_text("plco_id,is_dead,mortality_exitdays,d_dthicd10\nA00000,1,100,I10\n")
    with pytest.raises(ManifestError, match=r"image subjects missing from the mortality data"):
        build_manifest("plco", files)


def test_unknown_adapter_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no adapter for data set 'mnist'"):
        build_manifest("mnist", [tmp_path])
    with pytest.raises(ManifestError, match="no such file"):
        build_manifest("chexpert", [tmp_path / "nope.csv"])


def test_helpers():
    splits = patient_splits([f"p{i}" for i in range(100)], {"train": 0.7, "val": 0.1, "test": 0.2}, seed=0)
    counts = pd.Series(splits).value_counts()
    assert counts.to_dict() == {"train": 70, "test": 20, "val": 10}
    assert view_name("LL") == "LATERAL" and view_name("pa") == "PA" and view_name(float("nan")) is None
    assert view_from_filename("view1_frontal") == "FRONTAL" and view_from_filename("img_PA_01") == "PA"
    assert view_from_filename("chest-lateral") == "LATERAL" and view_from_filename("paper") is None


def test_adapters_say_what_they_chose(chexpert_files, tmp_path, caplog):
    # CheXpert given only train.csv, CXR14 without the official lists: each choice was silent
    train, _ = chexpert_files
    only_train = make_manifest("chexpert", [train], tmp_path / "a" / "chexpert.parquet")
    assert any("no test split" in n for n in only_train.notes)
    assert any("no test split" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert any("LATERAL" in n for n in load_card(only_train.card_path).notes)
    files = _cxr14_files(tmp_path, ["Edema", "No Finding", "Hernia", "Mass", "Edema", "No Finding"])
    seeded = make_manifest("cxr14", files[:1], tmp_path / "b" / "cxr14.parquet", seed=2)
    text = " ".join(seeded.notes)
    assert "seeded patient-level split (seed 2)" in text and "official: train 86,524, test 25,596" in text
    assert "no val split" in text
    official = make_manifest("cxr14", files, tmp_path / "c" / "cxr14.parquet")
    assert any("official lists train_val_list.txt, test_list.txt" in n for n in official.notes)


def test_sex_is_coded_f_m_in_every_adapter(chexpert_files, tmp_path):
    train, valid = chexpert_files
    assert set(build_manifest("chexpert", [train, valid])["sex"]) == {"F"}  # "Female" in the file
    files = _cxr14_files(tmp_path, ["Edema", "No Finding"])
    assert set(build_manifest("cxr14", files[:1])["sex"]) == {"M"}


def test_csv_lines_follow_the_file_through_blank_lines_quoted_newlines_and_filters(tmp_path):
    from data_manifests.adapters.common import csv_lines, read_csv

    path = tmp_path / "t.csv"
    path.write_text('id,note\na,plain\n\nb,"two\nlines"\nc,x\n')
    raw = read_csv(path, ["id"])
    assert list(raw["id"]) == ["a", "b", "c"]
    assert csv_lines(raw).tolist() == [2, 4, 6]
    assert csv_lines(raw[raw["id"] != "a"]).tolist() == [4, 6]  # a filtered frame keeps its rows' lines
    assert csv_lines(pd.DataFrame({"id": raw["id"]})) is None  # a new frame: no lines claimed
