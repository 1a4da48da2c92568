"""A small data set with every kind of source the shard writer meets, good and bad."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

GOOD_IDS = ["ds_p0_0", "ds_p0_1", "ds_p1_0", "ds_p1_1", "ds.p2/0", "ds p2 1", "ds_p3_0", "ds_p3_1", "ds_p4_0"]
BAD = {  # image_id -> expected reason fragment
    "bad_empty": "empty file",
    "bad_trunc_png": "truncated",
    "bad_trunc_jpg": "truncated",
    "bad_text": "not an image file",
    "bad_nopix": "DICOM without pixel data",
    "bad_missing": "missing file",
}


@dataclass
class SourceSet:
    root: Path
    manifest: pd.DataFrame
    expected: dict[str, np.ndarray]  # image_id -> pixels a reader must get back (no resize)


def _write(root: Path, rng: np.random.Generator) -> tuple[list[dict], dict[str, np.ndarray]]:
    rows, expected = [], {}

    def add(image_id: str, rel: str, patient: str, split: str, edema: float, pixels: np.ndarray | None) -> None:
        rows.append(
            {"image_id": image_id, "path": rel, "patient_id": patient, "split": split, "Edema": edema, "age": 60}
        )
        if pixels is not None:
            expected[image_id] = pixels

    a8 = rng.integers(0, 256, (48, 40), dtype=np.uint8)
    Image.fromarray(a8).save(root / "p0_0.png")
    add("ds_p0_0", "p0_0.png", "p0", "train", 1.0, a8)
    a16 = rng.integers(0, 65536, (36, 52), dtype=np.uint16)
    Image.fromarray(a16).save(root / "p0_1.png")
    add("ds_p0_1", "p0_1.png", "p0", "train", float("nan"), a16)
    (root / "sub").mkdir()
    for k in range(2):
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(root / f"sub/p1_{k}.jpg", quality=80)
        with Image.open(root / f"sub/p1_{k}.jpg") as image:
            add(f"ds_p1_{k}", f"sub/p1_{k}.jpg", "p1", "val", 0.0, np.asarray(image))
    shutil.copy(get_testdata_file("RG1_UNCR.dcm"), root / "p2_0.dcm")
    ds = pydicom.dcmread(root / "p2_0.dcm")
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    windowed = np.rint(apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds, index=0))  # its WindowCenter/Width
    add("ds.p2/0", "p2_0.dcm", "p2", "test", -1.0, (32767 - windowed).astype(np.uint16))
    rgb = rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "p2_1.png")
    add("ds p2 1", "p2_1.png", "p2", "test", 1.0, np.asarray(Image.fromarray(rgb).convert("L")))
    for k, (h, w) in enumerate([(50, 70), (33, 21), (64, 48)]):
        pixels = rng.integers(0, 4096, (h, w), dtype=np.uint16)
        Image.fromarray(pixels).save(root / f"p3_{k}.png")
        add(GOOD_IDS[6 + k], f"p3_{k}.png", "p3" if k < 2 else "p4", "train", float(k % 2), pixels)

    (root / "empty.png").write_bytes(b"")
    add("bad_empty", "empty.png", "p9", "train", 0.0, None)
    data = (root / "p0_1.png").read_bytes()
    (root / "trunc.png").write_bytes(data[: len(data) // 2])
    add("bad_trunc_png", "trunc.png", "p9", "train", 0.0, None)
    data = (root / "sub/p1_0.jpg").read_bytes()
    (root / "trunc.jpg").write_bytes(data[: len(data) // 2])
    add("bad_trunc_jpg", "trunc.jpg", "p9", "train", 0.0, None)
    (root / "text.png").write_text("a text file, not a PNG")
    add("bad_text", "text.png", "p9", "train", 0.0, None)
    del ds.PixelData
    ds.save_as(root / "nopix.dcm")
    add("bad_nopix", "nopix.dcm", "p9", "train", 0.0, None)
    add("bad_missing", "gone/never.png", "p9", "train", 0.0, None)
    return rows, expected


@pytest.fixture(scope="session")
def source_set(tmp_path_factory: pytest.TempPathFactory) -> SourceSet:
    root = tmp_path_factory.mktemp("images")
    rows, expected = _write(root, np.random.default_rng(3))
    # interleave the bad rows among the good ones so every shard may meet one
    order = [0, 9, 1, 2, 10, 3, 4, 11, 5, 12, 6, 7, 13, 8, 14]
    manifest = pd.DataFrame([rows[i] for i in order])
    return SourceSet(root, manifest, expected)
