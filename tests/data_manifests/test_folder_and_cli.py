"""`chex manifest folder` and the `chex manifest <dataset>` commands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from typer.testing import CliRunner

from data_manifests.adapters import make_folder_manifest
from pipeline.cli import app
from pipeline.manifest import read_manifest

runner = CliRunner()


def _dicom(path: Path, view: str, patient: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.PatientID, ds.ViewPosition = patient, view
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = np.zeros((4, 4), dtype=np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def _folder(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    for rel in ("files/p10/p10000032/s50414267/a1_PA.jpg", "files/p10/p10000032/s50414267/a2-lateral.png",
                "files/p11/p11000011/s5/b1.JPG", "loose/c1_frontal.png", "d1.png"):  # fmt: skip
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(root / rel, format="PNG")
    _dicom(root / "dicom" / "x.dcm", "AP", "PAT-7")
    _dicom(root / "dicom" / "y.dcm", "LL", "PAT-7")
    (root / "dicom" / "broken.dcm").write_bytes(b"not a dicom")
    (root / "notes.txt").write_text("ignore me")
    return root


def test_folder_walk_views_and_patients(tmp_path):
    root = _folder(tmp_path)
    result = make_folder_manifest(root, "mimic_cxr", tmp_path / "out.parquet")
    frame = read_manifest(result.manifest_path).set_index("path")
    assert len(frame) == 8 and set(frame["split"]) == {"train"} and set(frame["source"]) == {"mimic_cxr"}
    assert frame.loc["files/p10/p10000032/s50414267/a1_PA.jpg", ["patient_id", "view"]].tolist() == ["10000032", "PA"]
    assert frame.loc["files/p10/p10000032/s50414267/a2-lateral.png", "view"] == "LATERAL"
    assert frame.loc["files/p11/p11000011/s5/b1.JPG", "patient_id"] == "11000011"
    assert frame.loc["loose/c1_frontal.png", ["patient_id", "view"]].tolist() == ["loose", "FRONTAL"]
    assert frame.loc["d1.png", "patient_id"] == "d1" and pd.isna(frame.loc["d1.png", "view"])
    assert frame.loc["dicom/x.dcm", ["patient_id", "view"]].tolist() == ["PAT-7", "AP"]
    assert frame.loc["dicom/y.dcm", "view"] == "LATERAL"
    assert frame.loc["dicom/broken.dcm", "patient_id"] == "dicom"  # unreadable header: folder fallback


def test_cli_folder_and_errors(tmp_path):
    root = _folder(tmp_path)
    ws = tmp_path / "ws"
    result = runner.invoke(app, ["manifest", "folder", "--root", str(root), "--source", "padchest", "-w", str(ws)])
    assert result.exit_code == 0, result.output
    assert len(pd.read_parquet(ws / "corpus" / "sources" / "padchest.parquet")) == 8
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["manifest", "folder", "--root", str(empty), "--source", "x", "-w", str(ws)])
    assert result.exit_code == 2 and "no PNG, JPEG or DICOM files" in result.output


def test_cli_dataset_command_writes_manifest_and_card_and_reports_missing(tmp_path):
    cln = tmp_path / "CLNDAT_EN.txt"
    cln.write_text("".join(f"JPCLN{i:03d}.IMG\t3\t15\t54\tmale\t1\t1\tmalignant\n" for i in range(1, 11)))
    cnn = tmp_path / "CNNDAT_EN.txt"
    cnn.write_text("".join(f"JPCNN{i:03d}.IMG\t43\tfemale\tnon-nodule\n" for i in range(1, 11)))
    root = tmp_path / "images"
    root.mkdir()
    for i in range(1, 8):
        (root / f"JPCLN{i:03d}.png").write_bytes(b"x")
    ws = tmp_path / "ws"
    result = runner.invoke(
        app, ["manifest", "jsrt", "--source", str(cln), str(cnn), "--root", str(root), "-w", str(ws)]
    )
    assert result.exit_code == 0, result.output
    assert "13 image file(s) not found" in result.output and "JPCLN008.IMG" in result.output
    assert (ws / "manifests" / "jsrt.parquet").is_file() and (ws / "manifests" / "jsrt.card.yaml").is_file()
    assert len(pd.read_parquet(ws / "manifests" / "jsrt.parquet")) == 20

    bad = tmp_path / "CNNDAT_bad.txt"
    bad.write_text("JPCLN001.IMG 50 male\n")
    result = runner.invoke(app, ["manifest", "jsrt", "--source", str(bad), "-w", str(ws)])
    assert result.exit_code == 2 and "CNNDAT_bad.txt line 1" in result.output
    result = runner.invoke(app, ["manifest", "chexpert", "-w", str(ws)])
    assert result.exit_code == 2 and "--source" in result.output


def test_folder_walk_skips_mac_and_hidden_entries_and_says_so(tmp_path, caplog):
    root = _folder(tmp_path)
    for rel in ("__MACOSX/loose/._c1_frontal.png", "loose/._c1_frontal.png", ".cache/thumb.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"\0\5\26\7 AppleDouble")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    frame = read_manifest(make_folder_manifest(root, "mimic_cxr", tmp_path / "out.parquet").manifest_path)
    assert len(frame) == 8 and not frame["path"].str.contains("MACOSX|\\._|\\.cache").any()
    assert "skipped 4 hidden/system file(s)" in caplog.text and "__MACOSX" in caplog.text
