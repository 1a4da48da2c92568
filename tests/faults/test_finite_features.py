"""Non-finite features never pass silently: the store writer refuses inf/NaN tokens naming the images and the
store (and offers `--dtype float32` when float16 overflows), a basis is never fitted on NaN, and a probe that
meets a non-finite input names the images and the store instead of sklearn's "Input contains NaN"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from pipeline.backbone import build_backbone, save_checkpoint
from pipeline.embed.compress import compress_store
from pipeline.embed.stage import EmbedOptions, embed_datasets
from pipeline.errors import ChexError, StoreError
from pipeline.store import FeatureStore, Item, StoreLayout, StoreWriter, store_attrs
from pipeline.store.integrity import record_files
from pipeline.store.ledger import Ledger
from tests.faults.conftest import TINY, make_image_workspace
from tests.pipeline.test_store_projection import TRAIN, _full_store


def _writer(path: Path, dtype: str = "float16") -> StoreWriter:
    layout = StoreLayout(2, 8, 4, 0, dtype, chunk_rows=4, unit_rows=4)
    return StoreWriter.open(path, layout, store_attrs("t", {}, "ck", "0" * 64, [0, 1], dtype, {}))


def _write(writer: StoreWriter, cls: torch.Tensor) -> None:
    (unit,) = writer.plan(Item(f"img{i}", 0, "g") for i in range(4))
    assert writer.claim(unit)
    writer.write_unit(unit, {"cls": cls, "patch": torch.zeros(4, 2, 4, 8)})


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_tokens_beyond_float16_are_refused_naming_images_and_store(tmp_path, dtype):
    cls = torch.randn(4, 2, 8)
    cls[1, 0, 3], cls[2, 1, 0] = 1e6, -7e4  # beyond float16's 65504
    with pytest.raises(StoreError) as err:
        _write(_writer(tmp_path / "s", dtype), cls)
    message = str(err.value)
    assert "img1" in message and "img2" in message and "img0" not in message, message
    assert str(tmp_path / "s") in message and "--dtype float32" in message, message


def test_a_float32_store_keeps_what_float16_cannot(tmp_path):
    cls = torch.randn(4, 2, 8)
    cls[1, 0, 3] = 1e6
    _write(_writer(tmp_path / "s", "float32"), cls)
    store = FeatureStore.open(tmp_path / "s")
    assert store.layout.part_dtype("cls") == "float32"
    torch.testing.assert_close(store.read(np.arange(4), ("cls",))["cls"], cls)


def test_nan_from_the_backbone_is_refused(tmp_path):
    cls = torch.randn(4, 2, 8)
    cls[3, 0, 0] = float("nan")
    with pytest.raises(StoreError, match="img3"):
        _write(_writer(tmp_path / "s"), cls)


def test_embed_with_activations_beyond_float16_fails_naming_images_then_float32_works(tmp_path):
    """The repro: 49% of CLS values at +-inf, exit 0, verify intact."""
    ws = make_image_workspace(tmp_path / "ws", n=6)
    torch.manual_seed(0)
    model = build_backbone(TINY)
    with torch.no_grad():
        model.norm.weight.mul_(1e6)  # final LayerNorm: every token far beyond float16's range
    save_checkpoint(model, TINY, ws.checkpoints_dir("hot"))
    options = EmbedOptions(workers=0, batch_size=6, progress=False)
    with pytest.raises(StoreError) as err:
        embed_datasets(ws, ["toy"], ws.checkpoints_dir("hot"), "hot", source="manifest", options=options)
    assert "toy_0_0" in str(err.value) and "--dtype float32" in str(err.value), err.value
    wide = EmbedOptions(workers=0, batch_size=6, progress=False, dtype="float32")
    embed_datasets(ws, ["toy"], ws.checkpoints_dir("hot"), "hot32", source="manifest", options=wide)
    store = FeatureStore.open(ws.features_dir("hot32"))
    cls = store.read(store.row_numbers, ("cls",))["cls"]
    assert torch.isfinite(cls).all() and cls.abs().max() > 65504


def _poke(path: Path, part: str, rows: list[int], value: float) -> None:
    """Write `value` into rows of `part` behind the writer's back, then recompute the unit records (as a tool
    that 'fixes' checksums would)."""
    arr = zarr.open_group(path, mode="r+")[part]
    for row in rows:
        x = arr[row]
        x.flat[0] = value
        arr[row] = x
    ledger = Ledger(path)
    for unit in ledger.units():
        ledger.mark_done(unit, 0.0, files=record_files(path, unit))


def test_compress_refuses_to_fit_a_basis_on_nan_tokens_naming_the_images(tmp_path):
    source = _full_store(tmp_path / "full")
    rows = source.rows(["img1", "img2"])  # training images
    _poke(tmp_path / "full", "patch", list(rows), float("nan"))
    with pytest.raises(StoreError) as err:
        compress_store(tmp_path / "full", tmp_path / "r3", TRAIN, rank=3, fit_images=0, progress=False)
    message = str(err.value)
    assert "img1" in message and "img2" in message and str(tmp_path / "full") in message, message


@pytest.mark.parametrize("cache_bytes", [2 << 30, 0])  # cached in memory, and streamed
def test_a_probe_meeting_non_finite_features_names_images_and_store(tmp_path, cache_bytes):
    from pipeline.probe.data import Features

    source = _full_store(tmp_path / "full")
    _poke(tmp_path / "full", "cls", list(source.rows(["img4"])), float("inf"))
    store = FeatureStore.open(tmp_path / "full")
    ids = [f"img{i}" for i in range(20)]
    with pytest.raises(ChexError) as err:
        features = Features(store, ids, ("cls",), cache_bytes=cache_bytes)
        for _ in features.batches(np.arange(20), 8):
            pass
    assert "img4" in str(err.value) and str(tmp_path / "full") in str(err.value), err.value
