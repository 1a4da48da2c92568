"""Importing public masks into the workspace from small files in each source's real format: the images with masks
keep their manifest rows, their masks read back by the card's structure names, the rest are counted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.errors import ManifestError
from pipeline.masks import encode_rle
from pipeline.masks.import_masks import import_masks, match_by_path
from pipeline.masks.workspace import read_structures


def _save(path, mask, palette=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray((mask * 255).astype(np.uint8))
    (image.convert("P") if palette else image).save(path)


def _manifest(ids, paths=None):
    return pd.DataFrame({"image_id": ids, "path": paths or [f"{i}.png" for i in ids], "patient_id": ids,
                         "split": "train", "view": "PA", "Nodule": 1.0})  # fmt: skip


def test_scr_gifs_become_the_cards_structures(tmp_path):
    rng = np.random.default_rng(0)
    names = ("right lung", "left lung", "heart", "right clavicle", "left clavicle")
    truth = {s: rng.random((16, 16)) < 0.3 for s in names}
    for structure, mask in truth.items():
        _save(tmp_path / "scr" / "fold1" / "masks" / structure / "JPCLN001.gif", mask, palette=True)
    ws = tmp_path / "ws"
    out = import_masks(ws, "scr", _manifest(["JPCLN001", "JPCNN002"]), "scr", tmp_path / "scr",
                       ["right_lung", "left_lung", "heart"])  # fmt: skip
    assert out.manifest["image_id"].tolist() == ["JPCLN001"] and out.without_mask == 1
    assert "Nodule" not in out.manifest.columns  # a segmentation manifest carries no labels
    got = read_structures(ws, "scr", "JPCLN001", ["heart", "lungs"])
    assert np.array_equal(got[0], truth["heart"])
    assert np.array_equal(got[1], truth["right lung"] | truth["left lung"])
    with pytest.raises(ManifestError, match="right_clavicle"):
        read_structures(ws, "scr", "JPCLN001", ["right_clavicle"])  # not asked for: not written


def test_montgomery_and_shenzhen(tmp_path):
    left, right = np.zeros((10, 12), bool), np.zeros((10, 12), bool)
    left[2:8, 7:11], right[2:8, 1:5] = True, True
    _save(tmp_path / "mc" / "ManualMask" / "leftMask" / "MCUCXR_0001_0.png", left)
    _save(tmp_path / "mc" / "ManualMask" / "rightMask" / "MCUCXR_0001_0.png", right)
    ws = tmp_path / "ws"
    import_masks(ws, "montgomery_lungs", _manifest(["MCUCXR_0001_0"]), "montgomery", tmp_path / "mc",
                 ["right_lung", "left_lung"])  # fmt: skip
    got = read_structures(ws, "montgomery_lungs", "MCUCXR_0001_0", ["right_lung", "left_lung"])
    assert np.array_equal(got[0], right) and np.array_equal(got[1], left)
    _save(tmp_path / "sz" / "mask" / "CHNCXR_0001_0_mask.png", left | right)
    import_masks(ws, "shenzhen_lungs", _manifest(["CHNCXR_0001_0"]), "shenzhen", tmp_path / "sz", ["lungs"])
    assert np.array_equal(read_structures(ws, "shenzhen_lungs", "CHNCXR_0001_0", ["lungs"])[0], left | right)
    with pytest.raises(ManifestError, match="none of the 1 images"):
        import_masks(ws, "x", _manifest(["MCUCXR_0009_0"]), "montgomery", tmp_path / "mc", ["right_lung"])


def test_chexmask_joined_by_path_with_quality_filter(tmp_path):
    rng = np.random.default_rng(1)
    masks = [{n: rng.random((6, 8)) < 0.4 for n in ("Right Lung", "Left Lung", "Heart")} for _ in range(3)]
    csv = pd.DataFrame({
        "Path": ["CheXpert-v1.0/train/patient1/study1/view1_frontal.jpg",
                 "CheXpert-v1.0/train/patient2/study1/view1_frontal.jpg",
                 "CheXpert-v1.0/valid/patient9/study1/view1_frontal.jpg"],
        "Dice RCA (Mean)": [0.9, 0.6, 0.8],
        **{n: [encode_rle(m[n]) for m in masks] for n in ("Left Lung", "Right Lung", "Heart")},
        "Height": [6] * 3, "Width": [8] * 3,
    })  # fmt: skip
    csv.to_csv(tmp_path / "CheXpert.csv", index=False)
    manifest = _manifest(["chexpert_1", "chexpert_2", "chexpert_3"],
                         ["train/patient1/study1/view1_frontal.jpg", "train/patient2/study1/view1_frontal.jpg",
                          "train/patient3/study1/view1_frontal.jpg"])  # fmt: skip
    ws = tmp_path / "ws"
    out = import_masks(ws, "chexmask", manifest, "chexmask", tmp_path / "CheXpert.csv", ["right_lung", "heart"])
    assert out.manifest["image_id"].tolist() == ["chexpert_1"]  # patient2: Dice RCA 0.6 < 0.7; patient9: no image
    got = read_structures(ws, "chexmask", "chexpert_1", ["right_lung", "heart"])
    assert np.array_equal(got[0], masks[0]["Right Lung"]) and np.array_equal(got[1], masks[0]["Heart"])


def test_match_by_path_prefers_longest_unique_suffix():
    paths = ["images_001/images/00000001_000.png", "a/study1/view1.jpg", "b/study1/view1.jpg"]
    assert match_by_path(["00000001_000.png", "x/b/study1/view1.jpg", "study1/view1.jpg"], paths) == {0: 0, 1: 2}


def test_chex_manifest_masks_writes_the_segmentation_data_set(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cards import load_card, packaged_card
    from pipeline.cli.app import app
    from pipeline.manifest import write_manifest
    from pipeline.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    ws.manifests_dir.mkdir(parents=True)
    jsrt = _manifest(["JPCLN001", "JPCNN002"]).assign(split=["train", "test"])
    write_manifest(jsrt, ws.manifest_path("jsrt"), packaged_card("jsrt"))
    heart = np.zeros((8, 8), bool)
    heart[2:6, 2:6] = True
    for image_id in ("JPCLN001", "JPCNN002"):
        _save(tmp_path / "scr" / "masks" / "heart" / f"{image_id}.gif", heart, palette=True)
        _save(tmp_path / "scr" / "masks" / "left lung" / f"{image_id}.gif", ~heart, palette=True)
        _save(tmp_path / "scr" / "masks" / "right lung" / f"{image_id}.gif", ~heart, palette=True)
    args = ["manifest", "masks", "scr", "--from", "jsrt", "--kind", "scr", "--masks", str(tmp_path / "scr"),
            "-w", str(ws.root)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(ws.manifest_path("scr"))
    assert frame["image_id"].tolist() == ["JPCLN001", "JPCNN002"] and frame["split"].tolist() == ["train", "test"]
    card = load_card(ws.card_path("scr"))
    assert card.segmentation_task.structures[:3] == ("right_lung", "left_lung", "heart")
    assert np.array_equal(read_structures(ws.root, "scr", "JPCNN002", ["heart"])[0], heart)
    bad = CliRunner().invoke(app, ["manifest", "masks", "jsrt", "--from", "jsrt", "--kind", "scr", "--masks",
                                   str(tmp_path / "scr"), "-w", str(ws.root)])  # fmt: skip
    assert bad.exit_code == 2 and "no segmentation task" in bad.output
