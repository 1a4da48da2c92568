"""A small corpus with planted duplicates and test-set leaks, and the answers a build must find.

Three fake sources (alpha, beta, gamma) and an evaluation set (evalx) of smooth random grey images, whose
pHashes are far apart unless planted close. Every planted item is listed in `Planted`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, PngImagePlugin

from pipeline.manifest import write_manifest

SIZE = 96


@dataclass
class Planted:
    root: Path
    manifests: dict[str, Path] = field(default_factory=dict)
    roots: dict[str, Path] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)  # corpus image_id -> reason
    duplicate_of: dict[str, str] = field(default_factory=dict)
    near_of: dict[str, str] = field(default_factory=dict)
    near_eval: dict[str, str] = field(default_factory=dict)


def smooth_image(seed: int, size: int = SIZE) -> np.ndarray:
    """A smooth random grey field (sum of random low-frequency cosines), 8-bit."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    field_ = np.zeros((size, size))
    for _ in range(8):
        fx, fy = rng.uniform(-4, 4, size=2)
        field_ += rng.normal() * np.cos(2 * np.pi * (fx * x + fy * y) + rng.uniform(0, 2 * np.pi))
    field_ = (field_ - field_.min()) / (field_.max() - field_.min())
    return np.rint(20 + 215 * field_).astype(np.uint8)


def save_png(pixels: np.ndarray, path: Path, compress_level: int = 6, text: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    info = None
    if text is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", text)
    Image.fromarray(pixels).save(path, format="PNG", compress_level=compress_level, pnginfo=info)


def save_jpeg(pixels: np.ndarray, path: Path, quality: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="JPEG", quality=quality)


def save_dicom(pixels: np.ndarray, path: Path) -> None:
    """A minimal uncompressed MONOCHROME2 DICOM holding exactly `pixels`."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def build_planted(tmp: Path) -> Planted:
    planted = Planted(root=tmp)
    images = {
        f"{s}{k:02d}": smooth_image(seed) for seed, (s, k) in enumerate([(s, k) for s in "abce" for k in range(12)])
    }
    rows: dict[str, list[dict]] = {"alpha": [], "beta": [], "gamma": [], "evalx": []}

    def add(source: str, image_id: str, rel: str, patient: str, split: str = "train") -> None:
        rows[source].append({"image_id": image_id, "path": rel, "patient_id": patient, "split": split})

    root = {name: tmp / "data" / name / "images" for name in rows}
    # alpha: 12 plain 8-bit PNGs; a00 and a01 belong to the evaluation set's test patient.
    for k in range(12):
        image_id = f"a{k:02d}"
        pixels = images[image_id]
        if k == 7:  # exact duplicate inside the source: a06's pixels, other compression
            pixels = images["a06"]
            save_png(pixels, root["alpha"] / f"{image_id}.png", compress_level=9)
        elif k == 11:  # near copy of an evaluation test image: flagged, not dropped
            save_jpeg(images["e04"], root["alpha"] / f"{image_id}.jpg")
            add("alpha", image_id, f"{image_id}.jpg", "pA11")
            continue
        else:
            save_png(pixels, root["alpha"] / f"{image_id}.png")
        add("alpha", image_id, f"{image_id}.png", "pt_leak" if k < 2 else f"pA{k}")
    # beta: b02 is 16-bit; b03 re-encodes a03; b06 is an evaluation test image; b09 is a09 as 16-bit (not the
    # same pixels, but the same picture); b10's patient id equals the test patient's (another person).
    for k in range(12):
        image_id = f"b{k:02d}"
        rel = f"sub/{image_id}.png"
        if k == 2:
            save_png(images[image_id].astype(np.uint16) * 200, root["beta"] / rel)
        elif k == 3:
            save_png(images["a03"], root["beta"] / rel, compress_level=0, text="re-encoded copy")
        elif k == 6:
            save_png(images["e00"], root["beta"] / rel, compress_level=1)
        elif k == 9:
            save_png(images["a09"].astype(np.uint16) * 257, root["beta"] / rel)
        else:
            save_png(images[image_id], root["beta"] / rel)
        add("beta", image_id, rel, "pt_leak" if k == 10 else f"pB{k}")
    # gamma
    for k in range(10):
        image_id = "a08" if k == 8 else f"c{k:02d}"  # the same id as an alpha image (another picture)
        rel = f"{image_id}.png"
        target = root["gamma"] / rel
        if k == 1:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root["alpha"] / "a05.png", target)
        elif k == 2:
            save_png(images["b02"].astype(np.uint16) * 200, target, compress_level=9)
        elif k == 3:
            rel = f"{image_id}.jpg"
            save_jpeg(images["a10"], root["gamma"] / rel)
        elif k == 4:
            resized = Image.fromarray(images["b04"]).resize((SIZE - 4, SIZE - 4), Image.Resampling.BILINEAR)
            save_png(np.asarray(resized), target)
        elif k == 5:
            save_png(images["e01"], target, compress_level=0)
        elif k == 6:
            save_png(images["e03"], target)
        elif k == 7:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((root["alpha"] / "a02.png").read_bytes()[:60])  # truncated file
        elif k == 9:  # a04's pixels as DICOM
            rel = f"{image_id}.dcm"
            save_dicom(images["a04"], root["gamma"] / rel)
        else:
            save_png(images[f"c{k:02d}"], target)
        add("gamma", image_id, rel, f"pC{k}")
    # evalx: test e00, e01, e02 (patient pt_leak), e04; e03 is a training image (may appear in the corpus).
    for k, split, patient in [
        (0, "test", "pE0"),
        (1, "test", "pE1"),
        (2, "test", "pt_leak"),
        (3, "train", "pE3"),
        (4, "test", "pE4"),
    ]:
        image_id = f"e{k:02d}"
        save_png(images[image_id], root["evalx"] / f"{image_id}.png")
        add("evalx", image_id, f"{image_id}.png", patient, split)

    for name, frame_rows in rows.items():
        path = tmp / "manifests" / f"{name}.parquet"
        write_manifest(pd.DataFrame(frame_rows), path)
        planted.manifests[name] = path
        planted.roots[name] = root[name]

    planted.duplicate_of = {"a07": "a06", "b03": "a03", "c01": "a05", "c02": "b02", "c09": "a04"}
    planted.removed = {
        **dict.fromkeys(planted.duplicate_of, "duplicate"),
        "b06": "leak_image",
        "c05": "leak_image",
        "a00": "leak_patient",
        "a01": "leak_patient",
        "c07": "unreadable",
    }
    planted.near_of = {"b09": "a09", "c03": "a10", "c04": "b04"}
    planted.near_eval = {"a11": "evalx:e04"}
    return planted
