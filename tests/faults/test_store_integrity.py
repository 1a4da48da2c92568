"""A damaged feature store is never read as data: emptied, deleted, shortened or bit-flipped chunk files are
refused by the reader (naming the unit and file), found by `chex store verify`, and re-embedded by a rerun."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.errors import StoreError
from tests.faults.conftest import (
    assert_ok,
    assert_user_error,
    flat,
    make_image_workspace,
    make_tiny_checkpoint,
    run_chex,
)


def _store(path: Path, n: int = 24, unit_rows: int = 8, dtype: str = "float16") -> Path:
    from pipeline.store import Item, StoreLayout, StoreWriter, store_attrs

    layout = StoreLayout(2, 8, 4, 0, dtype, chunk_rows=4, unit_rows=unit_rows)
    attrs = store_attrs("t", {"embed_dim": 8}, "random", "0" * 64, [0, 1], dtype, {})
    writer = StoreWriter.open(path, layout, attrs)
    g = torch.Generator().manual_seed(0)
    for unit in writer.plan(Item(f"img{i:03d}", 0, "g") for i in range(n)):
        assert writer.claim(unit)
        k = len(unit.image_ids)
        writer.write_unit(
            unit, {"cls": torch.randn(k, 2, 8, generator=g), "patch": torch.randn(k, 2, 4, 8, generator=g)}
        )
    return path


def _damage(file: Path, how: str) -> None:
    data = bytearray(file.read_bytes())
    if how == "empty":
        file.write_bytes(b"")
    elif how == "delete":
        file.unlink()
    elif how == "short":
        file.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "flip":
        data[len(data) // 3] ^= 0x10
        file.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["empty", "delete", "short", "flip"])
@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_a_damaged_chunk_is_refused_naming_the_unit_and_file(tmp_path, how, dtype):
    from pipeline.store import FeatureStore

    path = _store(tmp_path / "store", dtype=dtype)
    clean = FeatureStore.open(path).read(np.arange(24))["cls"].clone()
    _damage(path / "cls" / "c" / "1" / "0" / "0", how)  # unit 1 = rows 8..15
    store = FeatureStore.open(path)
    np.testing.assert_array_equal(store.read(np.arange(8))["cls"], clean[:8])  # undamaged units still read
    with pytest.raises(StoreError) as err:
        store.read(np.arange(24))
    assert "unit-000001" in str(err.value) and "cls/c/1/0/0" in str(err.value), err.value


def test_verify_lists_damaged_units_and_a_rerun_re_embeds_exactly_those(tmp_path):
    from pipeline.store import FeatureStore

    ws = make_image_workspace(tmp_path / "ws", n=16)
    make_tiny_checkpoint(ws)
    embed = ["embed", "toy", "-w", ws.root, "--checkpoint", ws.checkpoints_dir("tiny"), "--backbone", "tiny",
             "--source", "manifest", "--workers", "0", "--batch-size", "4", "--unit-rows", "4"]  # fmt: skip
    assert_ok(run_chex(*embed))
    path = ws.features_dir("tiny")
    before = FeatureStore.open(path)
    want = before.read(np.arange(16))
    assert_ok(run_chex("store", "verify", "tiny", "-w", ws.root))

    _damage(path / "patch" / "c" / "1" / "0" / "0" / "0", "flip")  # same size: only a digest finds it
    _damage(path / "cls" / "c" / "3" / "0" / "0", "empty")
    result = run_chex("store", "verify", "tiny", "-w", ws.root)
    err = assert_user_error(result, "unit-000001", "unit-000003")
    assert "unit-000000" not in err and "unit-000002" not in err

    rerun = run_chex(*embed)
    assert_ok(rerun)
    assert re.search(r"this run embedded 8 rows", flat(rerun.stderr)), rerun.stderr  # units 1 and 3, nothing else
    assert_ok(run_chex("store", "verify", "tiny", "-w", ws.root))
    after = FeatureStore.open(path)
    got = after.read(after.rows(list(before.image_ids)))
    for part in ("cls", "patch"):
        np.testing.assert_array_equal(got[part], want[part])


def test_store_info_and_embed_do_not_call_a_store_with_an_emptied_chunk_complete(tmp_path):
    from pipeline.store import FeatureStore

    path = _store(tmp_path / "store")
    _damage(path / "cls" / "c" / "2" / "0" / "0", "empty")
    info = FeatureStore.open(path).info()
    assert not info["complete"] and info["damaged_units"] == ["unit-000002"]


def test_an_old_store_without_records_is_reported_unverifiable_not_crashed(tmp_path):
    from pipeline.store import FeatureStore
    from pipeline.store.verify import verify_store

    path = _store(tmp_path / "store")
    for marker in (path / "ledger" / "done").glob("unit-*.json"):
        data = json.loads(marker.read_text())
        data.pop("files", None)
        marker.write_text(json.dumps(data))
    report = verify_store(path)
    assert report.unverifiable == ["unit-000000", "unit-000001", "unit-000002"] and not report.damaged
    assert len(FeatureStore.open(path).read(np.arange(24))["cls"]) == 24


def _claim_file(path: Path, unit: str, host: str, pid: int, age_s: float) -> Path:
    import os
    import time

    claim = path / "ledger" / "claims" / unit
    claim.write_text(json.dumps({"host": host, "pid": pid, "time": time.time() - age_s}))
    os.utime(claim, (time.time() - age_s, time.time() - age_s))
    return claim


def _planned(tmp_path: Path, n: int):
    """A store writer with `n` rows planned in units of 8, and those units (nothing written yet)."""
    from pipeline.store import Item, StoreLayout, StoreWriter, store_attrs

    layout = StoreLayout(2, 8, 4, 0, "float16", chunk_rows=4, unit_rows=8)
    writer = StoreWriter.open(tmp_path / "s", layout, store_attrs("t", {}, "r", "0" * 64, [0, 1], "float16", {}))
    return writer, writer.plan(Item(f"i{k}", 0, "g") for k in range(n))


def test_stale_claims_are_taken_over_by_heartbeat_age_or_dead_owner(tmp_path, monkeypatch):
    import socket

    writer, units = _planned(tmp_path, 32)
    monkeypatch.setenv("CHEX_CLAIM_TIMEOUT_S", "600")
    _claim_file(writer.path, units[0].name, "other-host", 123, age_s=10)  # alive elsewhere: respected
    _claim_file(writer.path, units[1].name, "other-host", 123, age_s=3600)  # no heartbeat for an hour: taken over
    _claim_file(writer.path, units[2].name, socket.gethostname(), 2**22 + 7, age_s=1)  # dead pid here: at once
    assert [writer.claim(u) for u in units[:3]] == [False, True, True]
    owner = json.loads((writer.path / "ledger" / "claims" / units[1].name).read_text())
    assert owner["host"] == socket.gethostname() and owner["pid"] > 0


def test_a_writer_killed_while_claiming_leaves_no_ownerless_claim(tmp_path, monkeypatch):
    """CI saw a final embed exit 0 with one unit unembedded: a writer killed between creating its claim and writing
    its owner left an empty claim, which the next run took for a live writer's claim and skipped."""
    import os

    writer, (unit,) = _planned(tmp_path, 8)

    def killed(fd, data):
        raise KeyboardInterrupt("killed while writing the owner")

    monkeypatch.setattr(os, "write", killed)
    with pytest.raises(KeyboardInterrupt):
        writer.claim(unit)
    monkeypatch.undo()
    claims = writer.path / "ledger" / "claims"
    assert not (claims / unit.name).exists()  # never visible without its owner
    assert writer.claim(unit)


@pytest.mark.parametrize("kind", ["claim", "plan.lock", "folder lock"])
def test_an_ownerless_lock_left_by_an_older_chex_is_taken_over_at_once(tmp_path, kind):
    from pipeline.locks import LOCK_FILE, folder_lock

    writer, (unit,) = _planned(tmp_path, 8)
    if kind == "claim":
        (writer.path / "ledger" / "claims" / unit.name).write_text("")
        assert writer.claim(unit)
    elif kind == "plan.lock":
        (writer.path / "ledger" / "plan.lock").write_text("")
        with writer.ledger.planning_lock(timeout_s=0.5):
            pass
    else:
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / LOCK_FILE).write_text("")
        with folder_lock(tmp_path / "run", "run folder"):
            pass


def test_a_claim_whose_pid_now_names_a_newer_process_is_taken_over(tmp_path):
    """A dead writer's pid can be reused (by this very process, say): a claim written before the process that now
    has its pid started is not that process's, and is taken over."""
    import os
    import socket

    import psutil

    writer, units = _planned(tmp_path, 16)
    before_this_process = psutil.Process().create_time() - 60
    claim = writer.path / "ledger" / "claims" / units[0].name
    claim.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": before_this_process}))
    assert writer.claim(units[0])  # its heartbeat (mtime) is fresh: only the start time tells
    assert writer.claim(units[1]) and not writer.claim(units[1])  # this process's own fresh claim stays its own
