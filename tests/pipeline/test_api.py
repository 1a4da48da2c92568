"""`from pipeline import open_store`: a store as numpy / pandas / torch Dataset, padding never visible (issue 16)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import zarr
from typer.testing import CliRunner

from pipeline import open_store
from pipeline.cli import app
from pipeline.store import Item, StoreLayout, StoreWriter, store_attrs
from pipeline.workspace import Workspace

L, D, P = 2, 4, 3
N = 13  # write units of 8 rows: 16 rows allocated, 3 of them padding


@pytest.fixture
def ws(tmp_path):
    ws = Workspace(tmp_path / "ws")
    layout = StoreLayout(L, D, P, 0, chunk_rows=4, unit_rows=8)
    attrs = store_attrs("toy", {"embed_dim": D}, "ck/model.pt", "c" * 64, [0, 1], "float16", {"resize": 8})
    writer = StoreWriter.open(ws.features_dir("toy"), layout, attrs)
    items = [Item(f"img{i}", 0, group="g") for i in range(N)] + [Item("img0", 1, group="g")]
    for unit in writer.plan(items):
        assert writer.claim(unit)
        b = len(unit.image_ids)
        start = torch.tensor([int(i[3:]) for i in unit.image_ids], dtype=torch.float32)
        cls = start[:, None, None].expand(b, L, D).clone()
        patch = start[:, None, None, None] + torch.arange(P, dtype=torch.float32)[None, None, :, None]
        writer.write_unit(unit, {"cls": cls, "patch": patch.expand(b, L, P, D).clone()})
    ws.set_default_backbone("toy")
    return ws


def test_padding_rows_of_the_raw_zarr_are_never_visible(ws):
    raw = zarr.open_group(ws.features_dir("toy"), mode="r")
    assert raw["cls"].shape[0] == 16  # what a user opening the Zarr directly sees
    store = open_store(ws.root)
    assert len(store) == N and sorted(store.image_ids) == sorted(f"img{i}" for i in range(N))
    cls = store.numpy("cls")
    assert cls.shape == (N, L, D)
    expected = np.array([float(i[3:]) for i in store.image_ids])
    np.testing.assert_array_equal(cls[:, 0, 0], expected)


def test_pooled_and_patch_tokens_and_the_order_asked_for(ws):
    store = open_store(ws.features_dir("toy"))
    patch = store.numpy("patch", image_ids=["img5", "img2"])
    assert patch.shape == (2, L, P, D)
    np.testing.assert_array_equal(patch[:, 0, :, 0], [[5, 6, 7], [2, 3, 4]])
    pooled = store.numpy("pooled", image_ids=["img5"])
    np.testing.assert_allclose(pooled[0, 0, 0], 6.0)


def test_pandas_is_indexed_by_image_id(ws):
    frame = open_store(ws.root, backbone="toy").pandas("cls", layer=-1)
    assert frame.shape == (N, D) and frame.index.name == "image_id"
    assert frame.loc["img7", "cls_0"] == 7.0
    assert open_store(ws.root).pandas("pooled").shape == (N, L * D)


def test_torch_dataset_yields_ids_and_tensors(ws):
    dataset = open_store(ws.root).dataset("cls")
    assert len(dataset) == N
    image_id, tokens = dataset[3]
    assert isinstance(tokens, torch.Tensor) and tokens.shape == (L, D) and float(tokens[0, 0]) == float(image_id[3:])
    loader = torch.utils.data.DataLoader(dataset, batch_size=5)
    assert sum(len(ids) for ids, _ in loader) == N


def test_other_views_are_separate(ws):
    assert list(open_store(ws.root).with_view(1).image_ids) == ["img0"]


def test_export_npz_and_parquet_round_trip(ws):
    runner = CliRunner()
    for fmt in ("npz", "parquet"):
        result = runner.invoke(app, ["store", "export", "--format", fmt, "--workspace", str(ws.root)])
        assert result.exit_code == 0, result.output
    store = open_store(ws.root)
    with np.load(ws.root / "exports" / "toy.npz", allow_pickle=False) as data:
        assert data["image_id"].tolist() == list(store.image_ids)
        np.testing.assert_array_equal(data["cls"], store.numpy("cls"))
        np.testing.assert_array_equal(data["pooled"], store.numpy("pooled"))
        # the same values as the pandas frame of the same name (it once held the last layer only: (N, D))
        np.testing.assert_array_equal(data["pooled"].reshape(N, -1), store.pandas("pooled").to_numpy())
    frame = pd.read_parquet(ws.root / "exports" / "toy.parquet")
    assert frame["image_id"].tolist() == list(store.image_ids)
    np.testing.assert_array_equal(np.stack(frame["cls"]).reshape(-1, L, D), store.numpy("cls"))
    bad = runner.invoke(app, ["store", "export", "--format", "csv", "--workspace", str(ws.root)])
    assert bad.exit_code == 2 and "npz or parquet" in bad.output
