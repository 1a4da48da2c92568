"""Store rows are keyed by content, not by image id alone: a data set whose ids (or relative paths) match an
earlier one's never reuses the earlier images' features, and a probe never reads another data set's pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.embed.stage import EmbedOptions, embed_datasets
from pipeline.errors import StoreError
from pipeline.manifest import write_manifest
from pipeline.probe.data import check_in_store
from pipeline.store import FeatureStore
from pipeline.workspace import Workspace
from tests.faults.conftest import flat, grey_image, make_tiny_checkpoint

OPTIONS = EmbedOptions(workers=0, batch_size=4, unit_rows=4, progress=False)


def _dataset(ws: Workspace, name: str, seed: int, ids: list[str], folder: str | None = None) -> None:
    """Images of `seed` under images/<folder or name>/ (relative paths x<id>.png) and a manifest with `ids`."""
    images = ws.images_dir(folder or name)
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for k, image_id in enumerate(ids):
        Image.fromarray(grey_image(rng)).save(images / f"x{image_id}.png")
        split = ("train", "train", "val", "test")[k % 4]
        rows.append({"image_id": image_id, "path": f"x{image_id}.png", "patient_id": f"p{k}", "split": split})
    write_manifest(pd.DataFrame(rows), ws.manifest_path(name))


def _shard(ws: Workspace, name: str) -> None:
    from pipeline.shard import shard_dataset

    shard_dataset(ws.manifest_path(name), ws.images_dir(name), ws.shards_dir(name), name, progress=False)


def _embed(ws: Workspace, name: str, source: str):
    return embed_datasets(ws, [name], ws.checkpoints_dir("tiny"), "tiny", source=source, options=OPTIONS)


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    make_tiny_checkpoint(ws)
    return ws


@pytest.mark.parametrize("source", ["shards", "manifest"])
def test_other_images_under_the_same_ids_are_refused_naming_data_set_and_ids(ws, source):
    """d1 (images n0-n7) and d2 (other images p0-p7), both with ids 0-7: embedding d2 must not report them
    'already stored', and the probe of d2 must not read d1's features."""
    ids = [str(i) for i in range(8)]
    _dataset(ws, "d1", seed=1, ids=ids)
    _dataset(ws, "d2", seed=2, ids=ids)
    if source == "shards":
        _shard(ws, "d1")
        _shard(ws, "d2")
    _embed(ws, "d1", source)
    with pytest.raises(StoreError) as err:
        _embed(ws, "d2", source)
    message = flat(str(err.value))
    assert "d2" in message and "d1" in message and "'0'" in message and "differ" in message, message
    store = FeatureStore.open(ws.features_dir("tiny"))
    with pytest.raises(StoreError) as err:
        check_in_store(store, ids, "d2", "tiny")  # what `chex probe --dataset d2` checks before reading
    assert "d2" in str(err.value) and "d1" in str(err.value), err.value
    check_in_store(store, ids, "d1", "tiny")  # d1's own rows still serve d1


def test_same_relative_paths_with_other_pixels_are_not_skipped(ws):
    """peds_v2: the same relative paths (so the same ids) as peds, other pixels."""
    ids = [f"case{i}" for i in range(8)]
    _dataset(ws, "peds", seed=3, ids=ids)
    _dataset(ws, "peds_v2", seed=4, ids=ids)
    for name in ("peds", "peds_v2"):
        _shard(ws, name)
    first = _embed(ws, "peds", "auto")
    assert first.embedded == 8
    with pytest.raises(StoreError) as err:
        _embed(ws, "peds_v2", "auto")
    assert "peds_v2" in str(err.value) and "case0" in str(err.value), err.value


@pytest.mark.parametrize("source", ["shards", "manifest"])
def test_the_same_images_under_the_same_ids_are_shared_by_two_data_sets(ws, source):
    """A data set that holds some of another's images (same ids, same pixels) reuses their rows, verified."""
    ids = [str(i) for i in range(8)]
    _dataset(ws, "full", seed=5, ids=ids)
    subset = ws.manifest_path("full")
    frame = pd.read_parquet(subset).iloc[:4]
    write_manifest(frame, ws.manifest_path("part"))
    ws.images_dir("part").symlink_to(ws.images_dir("full"), target_is_directory=True)
    if source == "shards":
        _shard(ws, "full")
        _shard(ws, "part")
    _embed(ws, "full", source)
    summary = _embed(ws, "part", source)
    assert (summary.embedded, summary.skipped) == (0, 4)
    store = FeatureStore.open(ws.features_dir("tiny"))
    check_in_store(store, ids[:4], "part", "tiny")


def test_a_store_and_shards_without_content_keys_still_read_and_resume(ws):
    """Older stores (plan files without contents) and shards (json without the pixel hash): same data set reuses
    its rows by id, as before."""
    ids = [str(i) for i in range(8)]
    _dataset(ws, "old", seed=6, ids=ids)
    _shard(ws, "old")
    _embed(ws, "old", "auto")
    store = ws.features_dir("tiny")
    for plan in (store / "ledger" / "plan").glob("unit-*.json"):
        data = json.loads(plan.read_text())
        for key in ("contents", "dataset"):
            data.pop(key, None)
        plan.write_text(json.dumps(data))
    again = _embed(ws, "old", "auto")
    assert (again.embedded, again.skipped) == (0, 8)
    check_in_store(FeatureStore.open(store), ids, "old", "tiny")


def test_shards_record_the_decoded_pixels_hash(ws):
    from pipeline.shard import iter_samples, shard_paths
    from pipeline.shard_format import pixel_digest

    _dataset(ws, "h", seed=7, ids=["a", "b"])
    _shard(ws, "h")
    samples = list(iter_samples(shard_paths(ws.shards_dir("h"))))
    assert samples and all(s.meta["pixel_sha256"] == pixel_digest(s.pixels) for s in samples)
    manifest = pd.read_parquet(Path(ws.shards_dir("h")) / "manifest.parquet")
    assert list(manifest["pixel_sha256"]) == [s.meta["pixel_sha256"] for s in samples]


def test_shards_written_before_content_keys_are_rewritten_by_the_next_shard_run(ws):
    from pipeline.shard import iter_samples, shard_paths

    _dataset(ws, "legacy", seed=8, ids=["a", "b", "c"])
    _shard(ws, "legacy")
    for sidecar in Path(ws.shards_dir("legacy")).glob("*.done.json"):
        data = json.loads(sidecar.read_text())
        for sample in data["samples"]:
            sample.pop("pixel_sha256")
        sidecar.write_text(json.dumps(data))
    _shard(ws, "legacy")
    samples = list(iter_samples(shard_paths(ws.shards_dir("legacy"))))
    assert len(samples) == 3 and all(s.meta.get("pixel_sha256") for s in samples)


def test_same_image_rules():
    from pipeline.store.content import RowKey, same_image

    def gone(path: str) -> str:
        raise FileNotFoundError(path)

    def digest(path: str) -> str:
        return {"/a/x.png": "h1", "/b/x.png": "h1", "/c/x.png": "h2"}[path]

    assert same_image(RowKey("d", "h1"), RowKey("e", "h1")) is True  # shared image, keys recorded
    assert same_image(RowKey("d", "h1"), RowKey("d", "h2")) is False  # re-sharded with other pixels
    assert same_image(RowKey("d", "", "/a/x.png"), RowKey("e", "", "/b/x.png"), digest) is True  # hashed
    assert same_image(RowKey("d", "", "/a/x.png"), RowKey("e", "", "/c/x.png"), digest) is False
    assert same_image(RowKey("d", "", "/a/x.png"), RowKey("d", "", "/c/x.png"), digest) is False  # other root
    assert same_image(RowKey("d", "", "/gone.png"), RowKey("d", "", "/new.png"), gone) is True  # moved folder
    assert same_image(RowKey("d"), RowKey("e")) is None  # other data set, nothing to compare: refused
    assert same_image(RowKey(""), RowKey("e")) is True  # rows of unknown data set (older compress): by id
