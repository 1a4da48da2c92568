"""chex embed: stored tokens equal the model's, shards = manifest, views, skipping, growth, int8, refusal, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pipeline.backbone import last_layer_tokens, load_backbone
from pipeline.cli import app
from pipeline.embed import EmbedOptions, embed_datasets
from pipeline.embed.inputs import read_pixels
from pipeline.embed.preprocess import Preprocessing
from pipeline.errors import ConfigError, StoreError
from pipeline.store import FeatureStore
from tests.pipeline.embed.helpers import make_checkpoint, make_shards, make_workspace

OPTS = EmbedOptions(workers=0, batch_size=5, unit_rows=4, progress=False)


@pytest.fixture
def ws(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    make_checkpoint(ws)
    return ws


def _expected(ws, image_ids, view=0):
    model, config, _ = load_backbone(ws.checkpoints_dir("tiny"))
    pre = Preprocessing(config.img_size, config.mean, config.std)
    x = torch.stack([pre(read_pixels(ws.images_dir("toy") / f"p{i.split('_')[1]}.png"), i, view) for i in image_ids])
    with torch.inference_mode():
        return last_layer_tokens(model, x, 4)


def test_stored_tokens_are_the_models_last_layer_tokens(ws):
    summary = embed_datasets(ws, ["toy"], ws.checkpoints_dir("tiny"), options=OPTS)
    assert summary.store_path == ws.features_dir("tiny") and summary.rows == 12 and summary.embedded == 12
    store = FeatureStore.open(summary.store_path)
    ids = ["toy_7_0", "toy_0_0", "toy_3_0"]
    got = store.read(store.rows(ids), parts=("cls", "patch", "registers"))
    want = _expected(ws, ids)
    for part, w in zip(("cls", "patch", "registers"), want, strict=True):
        torch.testing.assert_close(got[part], w.half().float(), atol=0, rtol=0)
    assert store.attrs["layers"] == [0, 1, 2, 3] and store.attrs["dtype"] == "float16"
    assert store.attrs["preprocessing"]["image_size"] == 32 and len(store.attrs["checkpoint_sha256"]) == 64


def test_shards_give_the_same_store_as_manifest_and_images(ws):
    make_shards(ws, per_shard=5)
    a = embed_datasets(ws, ["toy"], ws.checkpoints_dir("tiny"), source="manifest", backbone_name="m", options=OPTS)
    b = embed_datasets(ws, ["toy"], ws.checkpoints_dir("tiny"), source="shards", backbone_name="s", options=OPTS)
    sa, sb = FeatureStore.open(a.store_path), FeatureStore.open(b.store_path)
    ids = sorted(sa.image_ids)
    assert sorted(sb.image_ids) == ids
    for part in ("cls", "patch"):
        assert torch.equal(sa.read(sa.rows(ids))[part], sb.read(sb.rows(ids))[part])
    # units never span shards: 3 shards of 5, 5, 2 images with 4-row units -> 2 + 2 + 1 units
    assert b.units_written == 5


def test_train_views_are_augmented_and_only_for_training_images(ws):
    embed_datasets(ws, ["toy"], ws.checkpoints_dir("tiny"), options=EmbedOptions(**{**OPTS.__dict__, "train_views": 3}))
    store = FeatureStore.open(ws.features_dir("tiny"))
    assert len(store) == 6 * 3 + 6
    assert store.n_views(["toy_0_0", "toy_5_0"]) == 3 and store.n_views(["toy_0_0", "toy_9_0"]) == 1
    v0, v2 = store.read(store.rows(["toy_1_0"]))["cls"], store.read(store.rows(["toy_1_0"], view=2))["cls"]
    assert (v0 - v2).abs().max() > 1e-3
    torch.testing.assert_close(v2, _expected(ws, ["toy_1_0"], view=2)[0].half().float(), atol=0, rtol=0)


def test_images_already_in_the_store_are_skipped_and_new_ones_appended(ws, tmp_path):
    first = embed_datasets(ws, ["toy"], ws.checkpoints_dir("tiny"), options=OPTS)
    again = embed_datasets(ws, ["toy"], ws.checkpoints_dir("tiny"), options=OPTS)
    assert (again.embedded, again.skipped, again.rows) == (0, 12, 12)
    # a second data set sharing 12 images (same ids) and adding 4 new ones pays only for the new ones
    make_workspace(ws.root, dataset="other", n=16, id_prefix="toy")
    grown = embed_datasets(ws, ["other"], ws.checkpoints_dir("tiny"), options=OPTS)
    assert (grown.embedded, grown.skipped, grown.rows) == (4, 12, 16)
    assert first.units_written == 3 and grown.units_written == 1


def test_int8_store_is_close_to_float16(ws):
    a = embed_datasets(ws, ["toy"], ws.checkpoints_dir("tiny"), backbone_name="f16", options=OPTS)
    opts = EmbedOptions(**{**OPTS.__dict__, "dtype": "int8"})
    b = embed_datasets(ws, ["toy"], ws.checkpoints_dir("tiny"), backbone_name="i8", options=opts)
    sa, sb = FeatureStore.open(a.store_path), FeatureStore.open(b.store_path)
    ids = list(sa.image_ids)
    pa, pb = sa.read(sa.rows(ids))["patch"], sb.read(sb.rows(ids))["patch"]
    step = pa.abs().amax(-1, keepdim=True) / 127
    assert ((pa - pb).abs() <= step / 2 + 2e-3 * pa.abs().amax(-1, keepdim=True)).all()


def test_a_store_of_another_backbone_is_refused(ws):
    embed_datasets(ws, ["toy"], ws.checkpoints_dir("tiny"), options=OPTS)
    make_checkpoint(ws, name="other", seed=1)
    with pytest.raises(StoreError, match="was made by backbone 'tiny'"):
        embed_datasets(ws, ["toy"], ws.checkpoints_dir("other"), backbone_name="tiny", options=OPTS)


def test_a_segmentation_set_stores_no_augmented_view_nothing_would_read(ws, caplog):
    """Segmentation trains on the eval view only (its masks are tied to those pixels): --train-views K stores one
    view per image there, and K for a classification set embedded in the same run."""
    from pipeline.synth import generate_cohort

    generate_cohort(ws, size="tiny", datasets=["scr"], n_images={"scr": 10}, image_size=32, progress=False)
    options = EmbedOptions(**{**OPTS.__dict__, "train_views": 3})
    with caplog.at_level("INFO", logger="pipeline.embed.inputs"):
        embed_datasets(ws, ["toy", "scr"], ws.checkpoints_dir("tiny"), source="manifest", options=options)
    assert "scr: its task trains on the eval view only; 1 view per image (not --train-views 3)" in caplog.text
    store = FeatureStore.open(ws.features_dir("tiny"))
    scr = [i for i in store.image_ids if i.startswith("scr")]
    assert len(scr) == 10 and store.n_views(scr) == 1
    assert store.n_views(["toy_0_0", "toy_5_0"]) == 3


def test_random_init_preset_and_bad_layers(ws):
    s = embed_datasets(ws, ["toy"], random_init="vit_tiny_patch16", image_size=32, options=OPTS)
    assert s.backbone_name == "vit_tiny_patch16-random"
    assert FeatureStore.open(s.store_path).attrs["checkpoint"] == "random-init:vit_tiny_patch16:seed=0"
    with pytest.raises(ConfigError, match="--layers 9"):
        embed_datasets(ws, ["toy"], ws.checkpoints_dir("tiny"), options=EmbedOptions(n_layers=9, workers=0))


def test_cli_embed_and_store_info(ws):
    runner = CliRunner()
    args = ["embed", "toy", "--checkpoint", str(ws.checkpoints_dir("tiny")), "--workers", "1", "-w", str(ws.root)]
    result = runner.invoke(app, [*args, "--dtype", "int8", "--layers", "2", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    info = runner.invoke(app, ["store", "info", "tiny", "-w", str(ws.root)])
    assert info.exit_code == 0 and "rows        12 (12 images" in info.output and "int8" in info.output
    assert "(12, 2, 16, 32) int8" in info.output and "(12, 2, 32) float16" in info.output  # CLS stays float16
    same = runner.invoke(app, ["embed", "--info", str(ws.features_dir("tiny"))])
    assert same.output == info.output
    bad = runner.invoke(app, ["embed", "toy", "--checkpoint", str(ws.root / "nope"), "-w", str(ws.root)])
    assert bad.exit_code == 2 and "does not exist" in bad.output


def test_preprocessing_eval_view_and_16_bit():
    pre = Preprocessing(16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    pixels = np.full((20, 30), 1000, dtype=np.uint16)
    pixels[:, 15:] = 3000
    x = pre(pixels)
    assert x.shape == (3, 16, 16)
    # min-max to [0,1] then (v - 0.5) / 0.25: the dark half is -2, the bright half +2
    assert torch.isclose(x[0, 8, 0], torch.tensor(-2.0)) and torch.isclose(x[0, 8, -1], torch.tensor(2.0))
    assert torch.equal(pre(pixels, "a", 1), pre(pixels, "a", 1))


def test_the_first_store_embedded_becomes_the_workspace_default(ws):
    embed_datasets(ws, ["toy"], ws.checkpoints_dir("tiny"), backbone_name="first", options=OPTS)
    embed_datasets(ws, ["toy"], ws.checkpoints_dir("tiny"), backbone_name="second", options=OPTS)
    assert ws.default_backbone == "first"
