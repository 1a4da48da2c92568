"""The synthetic RANZCR data set (lines and tubes with planted tip positions) and the anatomy masks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.cards import packaged_card
from pipeline.shard_format import decode_png
from pipeline.synth import generate_cohort, truth_path
from pipeline.synth.anatomy import Anatomy, Chest, new_chest
from pipeline.synth.masks import STRUCTURES, decode_masks, encode_masks, read_mask
from pipeline.synth.render import PatientJob, render_pixels
from pipeline.synth.specs import SPECS, TUBE_LANDMARKS
from pipeline.synth.tubes import CAJ, CARINA, CM, GOJ, TUBE_PAINTERS, TUBE_WIDTH
from pipeline.workspace import Workspace

RANZCR_LABELS = [
    "ETT - Abnormal", "ETT - Borderline", "ETT - Normal", "NGT - Abnormal", "NGT - Borderline",
    "NGT - Incompletely Imaged", "NGT - Normal", "CVC - Abnormal", "CVC - Borderline", "CVC - Normal",
    "Swan Ganz Catheter Present",
]  # fmt: skip

# Decoded pixels of a 12-image, 48-px cohort of each earlier data set, hashed with the generator before lines,
# tubes and masks were added (pipeline/synth at commit 79bb3cc): those additions must not move a pixel. A
# deliberate change of the generator (a new GENERATOR_VERSION) updates these. 16-bit sets (JSRT) are hashed by
# their top byte: numpy's SIMD exp/log differ in the last ulp between CPUs (AVX2 or not), which moved 2 of 55,296
# JSRT pixels by 1 of 65,535 (NPY_DISABLE_CPU_FEATURES=X86_V3 shows it), so their full 16-bit hash differed between
# two CI machines with the same pinned packages; 8-bit pixels and the top byte did not move.
PIXELS_BEFORE = {
    "cxrlt24": "40540595caac05a3",
    "chexpert": "4281461edf7849a4",
    "shenzhen": "cccbc3e77c50cf08",
    "montgomery": "f78952a229dc389d",
    "jsrt": "f16ac8179c517db1",
    "plco": "31962c838112bf1e",
}


def _portable_bytes(pixels: np.ndarray) -> bytes:
    """The pixels a hash may compare across CPUs: 8-bit as they are, 16-bit by their top byte."""
    return (pixels >> 8).astype(np.uint8).tobytes() if pixels.dtype == np.uint16 else pixels.tobytes()


@pytest.fixture(scope="module")
def ranzcr_ws(tmp_path_factory) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("ranzcr") / "ws")
    generate_cohort(ws, size="tiny", datasets=["ranzcr", "jsrt"], n_images={"ranzcr": 120, "jsrt": 10}, progress=False)
    return ws


def test_earlier_data_sets_pixels_unchanged(tmp_path):
    ws = Workspace(tmp_path / "ws")
    names = list(PIXELS_BEFORE)
    generate_cohort(ws, size="tiny", datasets=names, n_images={d: 12 for d in names}, image_size=48, progress=False)
    for name, expected in PIXELS_BEFORE.items():
        digest = hashlib.sha256()
        for path in sorted(ws.images_dir(name).glob("*.png")):
            digest.update(path.name.encode())
            digest.update(_portable_bytes(decode_png(path.read_bytes())))
        assert digest.hexdigest()[:16] == expected, name
    assert sorted(p.name for p in (ws.root / "masks").iterdir()) == ["jsrt", "montgomery", "shenzhen"]


def test_ranzcr_card_labels_exclusive_groups_and_truth(ranzcr_ws):
    card = packaged_card("ranzcr")
    assert card.label_columns == RANZCR_LABELS
    manifest = pd.read_parquet(ranzcr_ws.manifest_path("ranzcr"))
    labels = manifest[RANZCR_LABELS]
    assert set(np.unique(labels.to_numpy())) == {0.0, 1.0}
    assert labels[[c for c in RANZCR_LABELS if c.startswith("ETT")]].sum(axis=1).max() == 1  # one ETT at most
    assert labels[[c for c in RANZCR_LABELS if c.startswith("NGT")]].sum(axis=1).max() == 1
    truth = pd.read_parquet(truth_path(ranzcr_ws, "ranzcr")).set_index("image_id").loc[manifest["image_id"]]
    for column in RANZCR_LABELS:  # the labels are what was painted: the oracle reads them
        assert (truth[f"shown:{column}"].to_numpy() == labels[column].to_numpy()).all(), column
        assert labels[column].sum() > 0, column
    assert (truth[f"shown:{TUBE_LANDMARKS}"] == 1).all() and TUBE_LANDMARKS not in manifest.columns
    assert "mask_path" not in truth.columns  # ranzcr writes no masks


def _flat_chest(size: int = 160) -> Chest:
    """A chest with no pose (anatomical coordinates = the pixel grid) and an empty image, to read tips off."""
    v, u = np.mgrid[0:size, 0:size].astype(np.float32) * (2.0 / (size - 1)) - 1.0
    zeros = np.zeros((size, size), np.float32)
    return Chest(x=u, y=v, image=zeros.copy(), body=zeros, lung_right=zeros, lung_left=zeros, anatomy=Anatomy(),
                 rng=np.random.default_rng(0))  # fmt: skip


def _lowest_point(name: str, seed: int) -> tuple[float, float]:
    """(x, y) of the lowest (largest y) pixel the painter drew, in anatomical units."""
    chest = _flat_chest()
    TUBE_PAINTERS[name](chest, np.random.default_rng(seed))
    rows, cols = np.nonzero(chest.image > 0.12)
    k = int(np.argmax(rows))
    return float(chest.x[rows[k], cols[k]]), float(chest.y[rows[k], cols[k]])


@pytest.mark.parametrize("seed", range(6))
def test_tips_sit_where_their_label_says(seed):
    pixel = 2.0 / 159
    slack = 2 * pixel + 2 * TUBE_WIDTH  # the drawn line's half-width past its tip, and the tip's jitter
    above_carina = CARINA[1] - _lowest_point("ETT - Normal", seed)[1]
    assert 3 * CM - slack <= above_carina <= 7 * CM + slack  # 3-7 cm above the carina
    x, y = _lowest_point("ETT - Abnormal", seed)
    assert (y > CARINA[1] + pixel and x < CARINA[0]) or CARINA[1] - y > 10 * CM  # right bronchus, or far too high
    _, y = _lowest_point("NGT - Normal", seed)
    assert y > GOJ[1]  # in the stomach, below the diaphragm
    _, y = _lowest_point("NGT - Abnormal", seed)
    assert y < GOJ[1] - 0.1  # in the oesophagus or the lung, above the diaphragm
    _, y = _lowest_point("NGT - Incompletely Imaged", seed)
    assert y == pytest.approx(1.0)  # leaves the image: no tip on it
    x, y = _lowest_point("CVC - Normal", seed)
    assert abs(y - CAJ[1]) < 0.2 * abs(CAJ[1] + 0.6) + slack  # lower SVC / cavo-atrial junction


def test_anatomy_masks_written_for_mask_sets_and_match_the_anatomy(ranzcr_ws):
    truth = pd.read_parquet(truth_path(ranzcr_ws, "jsrt"))
    assert SPECS["jsrt"].masks and len(truth) == 10
    for image_id, relative in zip(truth["image_id"], truth["mask_path"], strict=True):
        masks = read_mask(ranzcr_ws.root / relative)
        assert list(masks) == list(STRUCTURES)
        image = decode_png((ranzcr_ws.images_dir("jsrt") / f"{image_id}.png").read_bytes()).astype(float)
        assert masks["heart"].shape == image.shape
        lungs = masks["right_lung"] | masks["left_lung"]
        assert 0.12 < lungs.mean() < 0.6 and 0.015 < masks["heart"].mean() < 0.2
        assert not (masks["right_lung"] & masks["left_lung"]).any()
        assert image[masks["heart"]].mean() > image[lungs].mean()  # lungs dark, heart bright
        xs = np.nonzero(masks["right_lung"])[1].mean(), np.nonzero(masks["left_lung"])[1].mean()
        assert xs[0] < xs[1] or xs[0] > xs[1]  # two separate fields (a rare mirrored image swaps them)


def test_masks_drawn_without_moving_a_pixel():
    job = PatientJob("jsrt", 0, 3, ("a", "b"), ("PA", "AP"), (("Nodule",), ()), 0.5, -0.5, 64, 16, "")
    masks: list[np.ndarray] = []
    with_masks = render_pixels(job, masks=masks)
    for a, b in zip(with_masks, render_pixels(job), strict=True):
        assert np.array_equal(a, b)
    assert len(masks) == 2 and masks[0].dtype == np.uint8 and masks[0].max() <= 7


def test_mask_bits_round_trip():
    rng = np.random.default_rng(0)
    masks = {name: rng.random((9, 7)) < 0.4 for name in STRUCTURES}
    decoded = decode_masks(encode_masks(masks))
    assert all(np.array_equal(decoded[n], masks[n]) for n in STRUCTURES)


def test_chest_heart_mask_is_the_rendered_heart():
    chest = new_chest(64, Anatomy(heart=1.3), np.random.default_rng(1), variation=False)
    assert (
        chest.heart is not None
        and (chest.heart > 0.5).sum()
        > (new_chest(64, Anatomy(), np.random.default_rng(1), variation=False).heart > 0.5).sum()
    )  # Cardiomegaly's larger heart is in the mask


def test_spec_paths(ranzcr_ws):
    assert Path(ranzcr_ws.root / "masks" / "jsrt").is_dir() and not (ranzcr_ws.root / "masks" / "ranzcr").exists()
