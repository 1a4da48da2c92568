"""Feature store: write units, read API, int8, growth, identity check, ledger truth, concurrency."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.errors import StoreError
from pipeline.store import FeatureStore, Item, StoreLayout, StoreWriter, store_attrs
from pipeline.store.ledger import Ledger

L, D, P, R = 2, 8, 4, 1


def _attrs(sha="a" * 64, dtype="float16"):
    return store_attrs("toy", {"embed_dim": D}, "ck/model.pt", sha, [-2, -1], dtype, {"resize": 32})


def _tokens(ids, views):
    """Deterministic tokens per (id, view), so any row can be checked after reading."""
    out = {"cls": [], "patch": [], "registers": []}
    for i, v in zip(ids, views, strict=True):
        g = torch.Generator().manual_seed(hash((i, v)) % 2**31)
        out["cls"].append(torch.randn(L, D, generator=g))
        out["patch"].append(torch.randn(L, P, D, generator=g))
        out["registers"].append(torch.randn(L, R, D, generator=g))
    return {k: torch.stack(v) for k, v in out.items()}


def _fill(path, ids, views=None, dtype="float16", unit_rows=4, chunk_rows=2, sha="a" * 64):
    views = views or [0] * len(ids)
    layout = StoreLayout(L, D, P, R, dtype=dtype, chunk_rows=chunk_rows, unit_rows=unit_rows)
    writer = StoreWriter.open(path, layout, _attrs(sha, dtype))
    units = writer.plan(Item(i, v, group="g") for i, v in zip(ids, views, strict=True))
    for unit in units:
        assert writer.claim(unit)
        writer.write_unit(unit, _tokens(unit.image_ids, unit.views))
    return writer, units


def test_round_trip_rows_read_in_given_order(tmp_path):
    ids = [f"img{i}" for i in range(10)]
    _, units = _fill(tmp_path / "s", ids)
    assert [len(u.image_ids) for u in units] == [4, 4, 2]
    store = FeatureStore.open(tmp_path / "s")
    assert (store.n_layers, store.dim, store.n_patches) == (L, D, P) and len(store) == 10 and store.complete
    assert store.attrs["checkpoint_sha256"] == "a" * 64 and store.attrs["layers"] == [-2, -1]
    want_ids = ["img7", "img2", "img7", "img0"]
    rows = store.rows(want_ids)
    got = store.read(rows, parts=("cls", "patch", "registers"))
    ref = _tokens(want_ids, [0] * 4)
    for part in ("cls", "patch", "registers"):
        assert got[part].dtype == torch.float32
        torch.testing.assert_close(got[part], ref[part].half().float())


def test_missing_ids_error_names_count_examples_and_command(tmp_path):
    _fill(tmp_path / "s", ["a", "b"])
    store = FeatureStore.open(tmp_path / "s")
    with pytest.raises(StoreError, match=r"2 of 3 images.*'x'.*chex embed"):
        store.rows(["a", "x", "y"])


def test_int8_error_is_within_half_a_step_and_smaller_on_disk(tmp_path):
    ids = [f"i{i}" for i in range(8)]
    _fill(tmp_path / "q", ids, dtype="int8")
    store = FeatureStore.open(tmp_path / "q")
    got = store.read(store.rows(ids), parts=("patch",))["patch"]
    ref = _tokens(ids, [0] * 8)["patch"]
    step = ref.abs().amax(-1, keepdim=True) / 127
    assert ((got - ref).abs() <= step / 2 + 1e-6).all()
    assert (got - ref).abs().max() > 0  # really quantised


def test_int8_store_keeps_cls_and_registers_in_float16(tmp_path):
    """CLS tokens are a few kB per image and the linear probe reads them: int8 stores quantize only patches
    (they once quantized CLS too, and the linear probe's lr choice moved on Shenzhen)."""
    ids = [f"i{i}" for i in range(4)]
    _fill(tmp_path / "q", ids, dtype="int8")
    store = FeatureStore.open(tmp_path / "q")
    got = store.read(store.rows(ids), ("cls", "patch", "registers"))
    ref = _tokens(ids, [0] * 4)
    for part in ("cls", "registers"):
        torch.testing.assert_close(got[part], ref[part].half().float())
        assert store._group[part].dtype == np.float16 and f"{part}_scale" not in store._group
    assert store._group["patch"].dtype == np.int8
    np.testing.assert_allclose(store.to_dask("cls").compute(), got["cls"].numpy())


def test_int8_stores_written_before_keep_reading_every_part_as_int8(tmp_path):
    import zarr

    legacy = StoreLayout(L, D, P, R, dtype="int8", int8_parts="all", chunk_rows=2, unit_rows=4)
    StoreWriter.open(tmp_path / "old", legacy, _attrs(dtype="int8"))
    group = zarr.open_group(tmp_path / "old", mode="r+")
    layout = dict(group.attrs["layout"])
    del layout["int8_parts"]  # what an older chex wrote
    group.attrs["layout"] = layout
    ids = ["a", "b"]
    writer, _ = _fill(tmp_path / "old", ids, dtype="int8")  # asks for today's layout, reopens the old one
    assert writer.layout.int8_parts == "all"
    store = FeatureStore.open(tmp_path / "old")
    assert store.layout.part_quantized("cls") and store._group["cls"].dtype == np.int8
    ref = _tokens(ids, [0, 0])["cls"]
    got = store.read(store.rows(ids))["cls"]
    assert ((got - ref).abs() <= ref.abs().amax(-1, keepdim=True) / 254 + 1e-6).all()
    assert not torch.equal(got, ref.half().float())


def test_views_and_n_views(tmp_path):
    ids = ["a", "a", "a", "b"]
    _fill(tmp_path / "s", ids, views=[0, 1, 2, 0])
    store = FeatureStore.open(tmp_path / "s")
    assert store.n_views(["a"]) == 3 and store.n_views(["a", "b"]) == 1
    r1 = store.rows(["a"], view=1)
    torch.testing.assert_close(store.read(r1)["cls"], _tokens(["a"], [1])["cls"].half().float())


def test_iter_batches_cover_rows_once_and_shuffle_is_seeded(tmp_path):
    ids = [f"i{i}" for i in range(20)]
    _fill(tmp_path / "s", ids, unit_rows=8)
    store = FeatureStore.open(tmp_path / "s")
    rows = store.rows(ids[3:17])
    seen = []
    for batch_rows, tokens in store.iter_batches(rows, batch_size=4, shuffle=True, seed=3):
        assert tokens["patch"].shape == (len(batch_rows), L, P, D)
        torch.testing.assert_close(tokens["cls"], store.read(batch_rows)["cls"])
        seen += list(batch_rows)
    assert sorted(seen) == sorted(rows)
    again = [list(b) for b, _ in store.iter_batches(rows, 4, shuffle=True, seed=3)]
    assert [r for b in again for r in b] == seen
    plain = [list(b) for b, _ in store.iter_batches(rows, 4)]
    assert [r for b in plain for r in b] == list(rows)


def test_dask_array_matches_read(tmp_path):
    ids = [f"i{i}" for i in range(6)]
    _fill(tmp_path / "s", ids, dtype="int8")
    store = FeatureStore.open(tmp_path / "s")
    arr = store.to_dask("patch")
    assert arr.shape == (6, L, P, D)
    np.testing.assert_allclose(arr.compute(), store.read(store.rows(list(store.image_ids)), ("patch",))["patch"])


def test_growth_appends_only_new_images(tmp_path):
    _fill(tmp_path / "s", ["a", "b", "c"])
    _, new = _fill(tmp_path / "s", ["b", "c", "d", "e"])
    assert [u.image_ids for u in new] == [["d", "e"]]
    store = FeatureStore.open(tmp_path / "s")
    assert sorted(store.image_ids) == ["a", "b", "c", "d", "e"]


def test_other_backbone_is_refused_naming_both(tmp_path):
    _fill(tmp_path / "s", ["a"])
    with pytest.raises(StoreError, match=r"sha256 aaaaaaaaaaaa.*sha256 bbbbbbbbbbbb"):
        _fill(tmp_path / "s", ["b"], sha="b" * 64)


def test_ledger_is_the_truth_for_readers(tmp_path):
    layout = StoreLayout(L, D, P, R, chunk_rows=2, unit_rows=2)
    writer = StoreWriter.open(tmp_path / "s", layout, _attrs())
    u0, u1 = writer.plan([Item("a"), Item("b"), Item("c")])
    with pytest.raises(StoreError, match="no complete rows"):
        FeatureStore.open(tmp_path / "s")
    writer.write_unit(u1, _tokens(u1.image_ids, u1.views))
    store = FeatureStore.open(tmp_path / "s")
    assert list(store.image_ids) == ["c"] and not store.complete
    assert [u.index for u in writer.pending()] == [u0.index]


def test_claims_are_exclusive_and_stale_claims_are_taken_over(tmp_path):
    layout = StoreLayout(L, D, P, R, chunk_rows=2, unit_rows=2)
    writer = StoreWriter.open(tmp_path / "s", layout, _attrs())
    (unit,) = writer.plan([Item("a")])
    assert writer.claim(unit)
    assert not Ledger(tmp_path / "s").claim(unit)  # held by a live process (this one)
    claim = tmp_path / "s" / "ledger" / "claims" / unit.name
    owner = json.loads(claim.read_text())
    claim.write_text(json.dumps({**owner, "pid": 2**31 - 2}))  # owner gone
    assert Ledger(tmp_path / "s").claim(unit)


def test_open_missing_store(tmp_path):
    with pytest.raises(StoreError, match="no feature store"):
        FeatureStore.open(tmp_path / "nope")


def test_rewriting_a_unit_removes_the_temporary_chunks_a_killed_writer_left(tmp_path):
    layout = StoreLayout(L, D, P, R, chunk_rows=2, unit_rows=2)
    writer = StoreWriter.open(tmp_path / "s", layout, _attrs())
    u0, u1 = writer.plan([Item("a"), Item("b"), Item("c")])
    root = tmp_path / "s"
    strays = [
        root / "view" / "c" / f"{u1.index}.0f1e.partial",
        root / "cls" / "c" / str(u1.index) / "0" / "0.9abc.partial",
    ]
    other = root / "view" / "c" / f"{u0.index}.77aa.partial"
    for stray in [*strays, other]:
        stray.parent.mkdir(parents=True, exist_ok=True)
        stray.write_bytes(b"")  # what zarr's atomic write leaves when the writer is killed before its rename
    writer.write_unit(u1, _tokens(u1.image_ids, u1.views))
    assert not any(s.exists() for s in strays)
    assert other.exists()  # another unit's files are its own writer's business
