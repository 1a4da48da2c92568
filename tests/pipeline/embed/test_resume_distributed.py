"""Resumability (real kill -9), torchrun ranks (gloo, 2 CPU ranks), dask workers, concurrent writers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from pipeline.embed import EmbedOptions, embed_datasets
from pipeline.store import FeatureStore
from tests.pipeline.embed.helpers import make_checkpoint, make_shards, make_workspace
from tests.pipeline.embed.test_embed import _expected

REPO = Path(__file__).resolve().parents[3]
OPTS = EmbedOptions(workers=0, batch_size=4, unit_rows=4, progress=False)


def _unit_files(store: Path, index: int) -> dict[str, int]:
    """mtime of every data file of a unit (its Zarr shard in each array)."""
    return {str(p): p.stat().st_mtime_ns for p in store.glob(f"*/c/{index}/**/*") if p.is_file()} | {
        str(p): p.stat().st_mtime_ns for p in store.glob(f"*/c/{index}") if p.is_file()
    }


def _assert_store_correct(ws, ids):
    store = FeatureStore.open(ws.features_dir("tiny"))
    got = store.read(store.rows(ids), parts=("cls", "patch"))
    want = _expected(ws, ids)
    torch.testing.assert_close(got["cls"], want[0].half().float(), atol=0, rtol=0)
    torch.testing.assert_close(got["patch"], want[1].half().float(), atol=0, rtol=0)


@pytest.mark.slow
def test_kill_9_then_rerun_recomputes_no_finished_unit(tmp_path):
    ws = make_workspace(tmp_path / "ws", n=40)
    make_checkpoint(ws)
    # The child marks units done slowly, so the kill lands between a unit's data write and its done marker.
    script = textwrap.dedent(f"""
        import time
        from pipeline.store.ledger import Ledger
        from pipeline.embed import EmbedOptions, embed_datasets
        original = Ledger.mark_done
        def slow_mark_done(self, unit, seconds, **kwargs):
            time.sleep(0.4)
            original(self, unit, seconds, **kwargs)
        Ledger.mark_done = slow_mark_done
        embed_datasets({str(ws.root)!r}, ["toy"], {str(ws.checkpoints_dir("tiny"))!r},
                       options=EmbedOptions(workers=1, batch_size=4, unit_rows=4, progress=False))
    """)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    done_dir = ws.features_dir("tiny") / "ledger" / "done"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(done_dir.glob("unit-*.json"))) < 3:
        assert child.poll() is None, "the embed run ended before it could be killed"
        time.sleep(0.05)
    time.sleep(0.2)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    markers = {p.name: p.read_text() for p in done_dir.glob("unit-*.json")}
    assert 3 <= len(markers) < 10
    done = [json.loads(m)["unit"] for m in markers.values()]
    files = {i: _unit_files(ws.features_dir("tiny"), i) for i in done}
    # every unit marked done is fully written
    store = FeatureStore.open(ws.features_dir("tiny"))
    assert len(store) == 4 * len(done)
    _assert_store_correct(ws, list(store.image_ids))

    summary = embed_datasets(ws, ["toy"], ws.checkpoints_dir("tiny"), options=OPTS)
    assert summary.embedded == 40 - 4 * len(done) and summary.rows == 40 and summary.pending_units == 0
    assert {p.name: p.read_text() for p in done_dir.glob("unit-*.json") if p.name in markers} == markers
    assert {i: _unit_files(ws.features_dir("tiny"), i) for i in done} == files  # untouched
    _assert_store_correct(ws, [f"toy_{i}_0" for i in range(40)])


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_write_disjoint_shards_and_units(tmp_path):
    ws = make_workspace(tmp_path / "ws", n=20)
    make_checkpoint(ws)
    make_shards(ws, per_shard=5)  # 4 shards
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [
        str(torchrun),
        "--nproc_per_node=2",
        "--master_port=29517",
        str(Path(sys.executable).with_name("chex")),
        "embed",
        "toy",
        "--checkpoint",
        str(ws.checkpoints_dir("tiny")),
        "--workers",
        "0",
        "--batch-size",
        "4",
        "-w",
        str(ws.root),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    store_path = ws.features_dir("tiny")
    plan = {
        json.loads(p.read_text())["index"]: json.loads(p.read_text()) for p in (store_path / "ledger/plan").glob("*")
    }
    writers: dict[int, set[str]] = {}
    for p in (store_path / "ledger" / "done").glob("unit-*.json"):
        marker = json.loads(p.read_text())
        writers.setdefault(marker["pid"], set()).add(plan[marker["unit"]]["group"])
    assert len(writers) == 2  # both ranks wrote
    a, b = writers.values()
    assert not a & b and len(a | b) == 4  # disjoint shards (hence disjoint units)
    _assert_store_correct(ws, [f"toy_{i}_0" for i in range(20)])


@pytest.mark.slow
def test_dask_local_cluster_embeds_the_same_tokens(tmp_path):
    ws = make_workspace(tmp_path / "ws", n=10)
    make_checkpoint(ws)
    opts = EmbedOptions(workers=2, batch_size=4, unit_rows=4, progress=False, dask="local")
    summary = embed_datasets(ws, ["toy"], ws.checkpoints_dir("tiny"), options=opts)
    assert summary.rows == 10 and summary.embedded == 10 and summary.units_written == 3
    _assert_store_correct(ws, [f"toy_{i}_0" for i in range(10)])


@pytest.mark.slow
def test_two_concurrent_embeds_cooperate(tmp_path):
    ws = make_workspace(tmp_path / "ws", n=24)
    make_checkpoint(ws)
    script = textwrap.dedent(f"""
        from pipeline.embed import EmbedOptions, embed_datasets
        s = embed_datasets({str(ws.root)!r}, ["toy"], {str(ws.checkpoints_dir("tiny"))!r},
                           options=EmbedOptions(workers=0, batch_size=2, unit_rows=2, progress=False))
        print("EMBEDDED", s.embedded)
    """)
    procs = [
        subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    embedded = [int(o.split("EMBEDDED")[1]) for o in outs]
    assert sum(embedded) == 24  # no row computed twice
    _assert_store_correct(ws, [f"toy_{i}_0" for i in range(24)])
