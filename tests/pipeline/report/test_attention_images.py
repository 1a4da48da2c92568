"""Attention overlays on exactly the crop the model saw, with the image found from --image-root, the recorded
root or the shards (issue 16, item 4)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from pipeline.crop import eval_crop_box
from pipeline.report import attention
from pipeline.report.collect import collect_runs
from pipeline.report.source_image import ImageFinder, crop_as_model_saw

PREPROCESSING = {"image_size": 16, "resize": "short_side+center_crop"}


@pytest.mark.parametrize(("height", "width", "size"), [(40, 80, 16), (90, 50, 32), (37, 101, 14), (30, 30, 8)])
def test_the_crop_box_is_what_resize_and_centre_crop_keep(height, width, size):
    columns = torch.arange(width, dtype=torch.float32).expand(1, height, width)  # pixel value = column
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(1, height, width)
    top, left, h, w = eval_crop_box(height, width, size)
    for marker, start, extent in ((columns, left, w), (rows, top, h)):
        seen = TF.center_crop(TF.resize(marker, [size], antialias=False), [size, size])
        low, high = float(seen.min()), float(seen.max())
        assert abs(low - start) <= 1.5 and abs(high - (start + extent - 1)) <= 1.5


def test_a_wide_image_is_cropped_to_its_centre_square():
    pixels = np.zeros((40, 80), dtype=np.float32)
    pixels[:, 20:60] = 1.0  # the centre square
    cropped, known = crop_as_model_saw(pixels, PREPROCESSING)
    assert known and cropped.shape == (40, 40) and cropped.min() == 1.0
    unchanged, known = crop_as_model_saw(pixels, {"resize": "something else"})
    assert not known and unchanged.shape == (40, 80)


@pytest.fixture
def wide_workspace(workspace, tmp_path):
    """The report test workspace with wide test images and a store that records its preprocessing."""
    from pipeline.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    shutil.copytree(workspace.root, ws.root)
    manifest = pd.read_parquet(ws.manifest_path("cxrlt24"))
    for path in manifest["path"][:12]:
        pixels = np.zeros((48, 96), dtype=np.uint8)
        pixels[:, 24:72] = 200  # only the centre square is bright
        Image.fromarray(pixels).save(ws.images_dir("cxrlt24") / path)
    store = ws.features_dir("vits-a")
    store.mkdir(parents=True)
    (store / "zarr.json").write_text(json.dumps({"attributes": {"preprocessing": PREPROCESSING}}))
    return ws


def _drawn(monkeypatch, coll, out):
    shown = []
    monkeypatch.setattr(attention, "overlay", lambda ax, pixels, att: shown.append(pixels))
    run = coll.run("cxrlt24", ("vits-a", "glori"))
    figure, notes = attention.attention_figure(coll, run, out, findings=["Cardiomegaly"])
    return shown[0], figure, notes


def test_the_overlay_is_drawn_on_the_crop_the_model_saw(wide_workspace, monkeypatch, tmp_path):
    # the map of the centre crop used to be stretched over the whole 48x96 image
    pixels, figure, _ = _drawn(monkeypatch, collect_runs(None, wide_workspace), tmp_path / "out")
    assert pixels.shape == (48, 48) and pixels.min() == 200
    assert "the region of the test image the model saw" in figure.caption


def test_moved_images_are_found_with_image_root_and_missing_ones_said(wide_workspace, monkeypatch, tmp_path):
    moved = tmp_path / "moved"
    shutil.move(wide_workspace.images_dir("cxrlt24"), moved)
    coll = collect_runs(None, wide_workspace)
    pixels, figure, notes = _drawn(monkeypatch, coll, tmp_path / "a")
    assert pixels is None and "shown alone" in figure.caption
    assert any("--image-root" in n and "not found" in n for n in notes)
    coll.image_roots = {"cxrlt24": moved}
    pixels, _, _ = _drawn(monkeypatch, coll, tmp_path / "b")
    assert pixels is not None and pixels.shape == (48, 48)


def test_images_are_found_in_the_shards_when_the_folder_is_gone(tmp_path):
    from tests.pipeline.embed.helpers import make_shards, make_workspace

    ws = make_workspace(tmp_path / "ws", n=6)
    make_shards(ws, per_shard=2)
    expected = np.asarray(Image.open(ws.images_dir("toy") / "p4.png"), dtype=np.float32)
    shutil.rmtree(ws.images_dir("toy"))
    finder = ImageFinder(ws, "toy")
    found = finder.pixels("toy_4_0")
    assert found is not None and found.shape == expected.shape
    assert str(ws.shards_dir("toy")) in finder.searched


def test_report_image_root_must_be_a_folder(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    result = CliRunner().invoke(
        app, ["report", "--image-root", f"cxrlt24={tmp_path / 'nope'}", "--workspace", str(tmp_path / "ws")]
    )
    assert result.exit_code == 2 and "is not a folder" in result.output
