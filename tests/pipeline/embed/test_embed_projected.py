"""chex embed --rank / --pool: the basis is fitted on train images by the backbone, rows are projected as they are
embedded, and the result matches compressing a full store; CLI `store compress` and `store info`."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.embed import EmbedOptions, embed_datasets
from pipeline.errors import ConfigError, StoreError
from pipeline.store import FeatureStore
from pipeline.store.projection import pool_patches
from tests.pipeline.embed.helpers import make_checkpoint, make_workspace

OPTS = EmbedOptions(workers=0, batch_size=5, unit_rows=4, progress=False)


@pytest.fixture
def ws(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    make_checkpoint(ws)
    return ws


def test_embed_rank_equals_full_store_projected_by_its_train_fitted_basis(ws):
    full = embed_datasets(ws, ["toy"], ws.checkpoints_dir("tiny"), backbone_name="full", options=OPTS)
    opts = dataclasses.replace(OPTS, patch_rank=6, pool=2, fit_images=0)
    proj = embed_datasets(ws, ["toy"], ws.checkpoints_dir("tiny"), backbone_name="r6", options=opts)
    a, b = FeatureStore.open(full.store_path), FeatureStore.open(proj.store_path)
    basis = b.projection
    assert basis.rank == 6 and basis.pool == 2 and basis.fit["images"] == 6  # the 6 train images only
    ids = sorted(a.image_ids)
    fa, fb = a.read(a.rows(ids)), b.read(b.rows(ids))
    assert fb["patch"].shape == (12, 1, 4, 6)
    torch.testing.assert_close(fb["cls"], fa["cls"])
    torch.testing.assert_close(fb["patch"], basis.apply(fa["patch"]), atol=0.05, rtol=0.01)
    # the basis's mean is the mean of the train images' pooled tokens
    train = [i for i in ids if int(i.split("_")[1]) < 6]
    x = pool_patches(a.read(a.rows(train), ("patch",))["patch"], 2)
    np.testing.assert_allclose(basis.mean, x.permute(0, 2, 1, 3).reshape(-1, 128).mean(0).numpy(), atol=2e-3)


def test_embed_rank_resumes_with_the_saved_basis_and_refuses_another_rank(ws):
    opts = dataclasses.replace(OPTS, patch_rank=5)
    first = embed_datasets(ws, ["toy"], ws.checkpoints_dir("tiny"), backbone_name="r5", options=opts)
    store = FeatureStore.open(first.store_path)
    basis = store.projection.basis.copy()
    again = embed_datasets(ws, ["toy"], ws.checkpoints_dir("tiny"), backbone_name="r5", options=opts)
    assert again.embedded == 0 and again.skipped == 12
    np.testing.assert_array_equal(FeatureStore.open(first.store_path).projection.basis, basis)
    with pytest.raises(StoreError, match="holds rank 5"):
        embed_datasets(ws, ["toy"], ws.checkpoints_dir("tiny"), backbone_name="r5",
                       options=dataclasses.replace(OPTS, patch_rank=4))  # fmt: skip
    with pytest.raises(ConfigError, match="--pool 3"):
        embed_datasets(ws, ["toy"], ws.checkpoints_dir("tiny"), backbone_name="p3",
                       options=dataclasses.replace(OPTS, pool=3))  # fmt: skip


def test_cli_store_compress_and_info(ws):
    embed_datasets(ws, ["toy"], ws.checkpoints_dir("tiny"), backbone_name="full", options=OPTS)
    runner = CliRunner()
    result = runner.invoke(app, ["store", "compress", "full", "--out", "r8", "--rank", "8", "--dtype", "int8",
                                 "-w", str(ws.root)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "rank 8" in result.output and "variance kept" in result.output
    info = runner.invoke(app, ["store", "info", "r8", "-w", str(ws.root)])
    assert info.exit_code == 0, info.output
    assert "rank R=8, variance kept 0." in info.output and "fitted on 6 train images" in info.output
    assert "whitened coordinates" in info.output
    assert "per image" in info.output
    bad = runner.invoke(app, ["store", "compress", "full", "--out", "x", "--rank", "-1", "-w", str(ws.root)])
    assert bad.exit_code == 2 and "--rank -1" in bad.output


def test_train_ids_exclude_an_image_held_out_by_another_data_set(tmp_path):
    import pandas as pd

    from pipeline.embed.compress import train_image_ids
    from pipeline.manifest import write_manifest

    ws = make_workspace(tmp_path / "ws")
    other = pd.DataFrame({"image_id": ["toy_0_0", "toy_1_0"], "path": ["p0.png", "p1.png"],
                          "patient_id": ["a", "b"], "split": ["test", "train"]})  # fmt: skip
    write_manifest(other, ws.manifest_path("other"))
    assert train_image_ids(ws, ["toy"]) == {f"toy_{i}_0" for i in range(6)}
    assert train_image_ids(ws) == {f"toy_{i}_0" for i in range(1, 6)}  # toy_0_0 is a test image of "other"


def test_embed_pool_averages_blocks_of_a_non_square_grid(ws, monkeypatch):
    """Issue 23: a backbone whose 16 patches lie on a 2x8 grid was pooled as if they were 4x4 (rows mixed)."""
    from pipeline.embed.model import BackboneSpec

    load = BackboneSpec.load
    monkeypatch.setattr(BackboneSpec, "load", lambda self: dataclasses.replace(load(self), grid=(2, 8)))
    full = embed_datasets(ws, ["toy"], ws.checkpoints_dir("tiny"), backbone_name="full", options=OPTS)
    pooled = embed_datasets(ws, ["toy"], ws.checkpoints_dir("tiny"), backbone_name="p2",
                            options=dataclasses.replace(OPTS, pool=2))  # fmt: skip
    a, b = FeatureStore.open(full.store_path), FeatureStore.open(pooled.store_path)
    assert a.layout.grid == (2, 8) and b.layout.grid == (1, 4) and b.attrs["patch_grid"] == [2, 8]
    ids = sorted(a.image_ids)
    x = a.read(a.rows(ids))["patch"].float()
    n, n_layers, d = len(ids), x.shape[1], x.shape[-1]
    want = x.reshape(n, n_layers, 1, 2, 4, 2, d).mean(dim=(3, 5)).reshape(n, n_layers, 4, d)  # 2x2 blocks of 2x8
    torch.testing.assert_close(b.read(b.rows(ids))["patch"].float(), want, atol=2e-3, rtol=2e-3)
    with pytest.raises(ConfigError, match=r"--pool 4 must divide both sides of the 2x8 patch grid; pools that do: 2"):
        embed_datasets(ws, ["toy"], ws.checkpoints_dir("tiny"), backbone_name="p4",
                       options=dataclasses.replace(OPTS, pool=4))  # fmt: skip
