"""The planted tips of the synthetic lines and tubes, read back in image pixels (pipeline/synth/tips.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.synth import generate_cohort
from pipeline.synth.anatomy import Anatomy, Chest, new_chest
from pipeline.synth.findings import paint
from pipeline.synth.tips import line_tips, planted_tips
from pipeline.synth.tubes import TUBE_PAINTERS
from pipeline.workspace import Workspace

LINES = [name for name in TUBE_PAINTERS if name != "Tube Landmarks"]
SIZE = 64


@pytest.fixture(scope="module")
def ranzcr_ws(tmp_path_factory) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("tips") / "ws")
    generate_cohort(ws, size="tiny", datasets=["ranzcr"], n_images={"ranzcr": 60}, image_size=SIZE, progress=False)
    return ws


def test_an_unposed_chest_maps_anatomical_tips_to_their_pixels():
    size = 81
    v, u = np.mgrid[0:size, 0:size].astype(np.float32) * (2.0 / (size - 1)) - 1.0
    zeros = np.zeros((size, size), np.float32)
    chest = Chest(x=u, y=v, image=zeros.copy(), body=zeros, lung_right=zeros, lung_left=zeros, anatomy=Anatomy(),
                  rng=np.random.default_rng(0))  # fmt: skip
    chest.lines.append(("ETT - Normal", [(0.0, -1.0), (0.5, 0.25)]))
    assert line_tips(chest)["ETT - Normal"] == pytest.approx((60.0, 50.0), abs=1e-3)  # (x+1)·40, (y+1)·40


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("finding", ["ETT - Abnormal", "NGT - Abnormal", "NGT - Normal", "CVC - Normal"])
def test_the_tip_lies_on_the_drawn_line_of_a_posed_chest(finding, seed):
    """A random pose (rotation, scale, shift, sometimes mirrored): the tip pixel is on the painted line's end."""
    chest = new_chest(96, Anatomy(), np.random.default_rng(seed), variation=True)
    chest.image[:] = 0
    paint(chest, [finding], {finding: np.random.default_rng(100 + seed)})
    (x, y) = line_tips(chest)[finding]
    assert 0 <= x <= 95 and 0 <= y <= 95
    drawn = chest.image[round(y), round(x)]
    assert drawn > 0.5 * chest.image.max()


def test_planted_tips_of_a_generated_cohort_match_its_labels(ranzcr_ws):
    manifest = pd.read_parquet(ranzcr_ws.manifest_path("ranzcr"))
    tips = planted_tips(ranzcr_ws, "ranzcr", manifest["image_id"])
    assert (tips["image_size"] == SIZE).all()
    for name in LINES:
        labelled = set(manifest.loc[manifest[name] == 1, "image_id"])
        assert set(tips.loc[tips["finding"] == name, "image_id"]) == labelled, name
    incomplete = tips[tips["finding"] == "NGT - Incompletely Imaged"]
    assert len(incomplete) and not incomplete["on_image"].any()  # the tube leaves the image before its tip
    ett = tips[tips["finding"].str.startswith("ETT")]
    assert len(ett) and ett["on_image"].all()
    # asking for a few ids paints only their patients, with the same answer
    some = list(manifest["image_id"][:5])
    few = planted_tips(ranzcr_ws, "ranzcr", some)
    assert set(few["image_id"]) <= set(some)
    merged = few.merge(tips, on=["image_id", "finding"], suffixes=("", "_all"))
    assert len(merged) == len(few) and np.allclose(merged["x"], merged["x_all"])


def test_no_tips_for_a_data_set_the_workspace_did_not_generate(ranzcr_ws):
    assert planted_tips(ranzcr_ws, "jsrt", ["x"]).empty
