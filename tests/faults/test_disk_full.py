"""A full disk: a clear error (DiskFullError, exit 2, no traceback) and a state that the same command resumes.

Where the tests may mount a tmpfs (root), the disk really fills up (a 1 MB tmpfs nearly filled by a filler file,
"freeing space" = deleting the filler). Everywhere, the failure is also injected in-process at the write path
(`OSError(ENOSPC)` after a few writes), so CI without mount rights still covers it.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.faults.conftest import (
    REPO,
    assert_ok,
    assert_user_error,
    chex_cmd,
    chex_env,
    make_image_workspace,
    make_tiny_checkpoint,
    run_chex,
    tree_bytes,
)


@pytest.fixture
def tiny_fs(tmp_path):
    """A 1 MB tmpfs, or skip-free None when this process may not mount one."""
    mount = tmp_path / "tinyfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(mount: Path, leave_bytes: int) -> Path:
    stat = os.statvfs(mount)
    filler = mount / "filler"
    filler.write_bytes(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave_bytes))
    return filler


def _store_values(path: Path) -> dict[str, np.ndarray]:
    from pipeline.store import FeatureStore

    fs = FeatureStore.open(path)
    ids = sorted(fs.image_ids)
    tokens = fs.read(fs.rows(ids))
    return {i: np.concatenate([tokens["cls"][k].flatten(), tokens["patch"][k].flatten()]) for k, i in enumerate(ids)}


def _embed_args(ws, store: Path) -> list[object]:
    return [
        "embed", "toy", "-w", ws.root, "--checkpoint", ws.checkpoints_dir("tiny"), "--backbone", "tiny",
        "--store", store, "--source", "manifest", "--workers", "0", "--batch-size", "4", "--unit-rows", "4",
    ]  # fmt: skip


@pytest.mark.slow
def test_embed_on_a_really_full_disk_then_resumed_after_freeing_space(tmp_path, tiny_fs):
    if tiny_fs is None:  # no mount rights here: the injected variant below covers the code path
        test_embed_write_failure_injected_then_resumed(tmp_path / "injected")
        return
    n = 48
    ws = make_image_workspace(tmp_path / "ws", n=n)
    make_tiny_checkpoint(ws)
    reference = subprocess.Popen(chex_cmd(*_embed_args(ws, tmp_path / "reference")), cwd=REPO, env=chex_env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    filler = _fill(tiny_fs, 40 * 4096)
    store = tiny_fs / "store"
    full = run_chex(*_embed_args(ws, store))
    assert_user_error(full, "no space left", str(store), "rerun the same command")
    done = {p.name: p.read_bytes() for p in (store / "ledger" / "done").glob("unit-*.json")}
    assert 0 < len(done) < n // 4  # some units finished before the disk filled up
    assert not list(store.rglob("*.tmp")) and not list(store.rglob("*.partial"))  # no half-written file left

    filler.unlink()  # "free some space"
    resumed = run_chex(*_embed_args(ws, store))
    assert_ok(resumed)
    embedded = int(re.search(r"this run embedded (\d+) rows", " ".join(resumed.stderr.split())).group(1))
    assert embedded == n - 4 * len(done)  # finished units kept, not redone
    assert {p.name: p.read_bytes() for p in (store / "ledger" / "done").glob("unit-*.json") if p.name in done} == done
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    want, got = _store_values(tmp_path / "reference"), _store_values(store)
    assert sorted(got) == sorted(want) and len(got) == n
    assert all(np.array_equal(got[i], want[i]) for i in want)


def test_embed_write_failure_injected_then_resumed(tmp_path):
    """ENOSPC raised by the store's file writes after a few units: DiskFullError; rerun completes identically."""
    import zarr.storage._local as local

    from pipeline.embed import EmbedOptions, embed_datasets
    from pipeline.errors import DiskFullError

    n = 24
    ws = make_image_workspace(tmp_path / "ws", n=n)
    make_tiny_checkpoint(ws)
    opts = EmbedOptions(workers=0, batch_size=4, unit_rows=4, progress=False)
    embed_datasets(ws, ["toy"], ws.checkpoints_dir("tiny"), "tiny", source="manifest", options=opts)
    reference = _store_values(ws.features_dir("tiny"))

    store = tmp_path / "store"
    original, calls = local._put, {"n": 0}

    def put(path, value, exclusive=False):
        if "/c/" in str(path):  # array data (not metadata): fail from the 3rd unit's writes on
            calls["n"] += 1
            if calls["n"] > 2 * 2:  # 2 arrays with data chunks per unit (cls, patch) + ids/views
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return original(path, value, exclusive=exclusive)

    local._put = put
    try:
        with pytest.raises(DiskFullError, match=rf"no space left on the disk holding {re.escape(str(store))}.*unit"):
            embed_datasets(ws, ["toy"], ws.checkpoints_dir("tiny"), "tiny", source="manifest",
                           store_path=store, options=opts)  # fmt: skip
    finally:
        local._put = original
    done = sorted(p.name for p in (store / "ledger" / "done").glob("unit-*.json"))
    assert 0 < len(done) < n // 4
    assert not list((store / "ledger" / "claims").iterdir())  # the failed unit is free for the rerun
    summary = embed_datasets(ws, ["toy"], ws.checkpoints_dir("tiny"), "tiny", source="manifest",
                             store_path=store, options=opts)  # fmt: skip
    assert summary.embedded == n - 4 * len(done) and summary.pending_units == 0
    got = _store_values(store)
    assert sorted(got) == sorted(reference) and all(np.array_equal(got[i], reference[i]) for i in reference)
    shutil.rmtree(tmp_path / "ws")


# ---- every stage: the disk fills up mid-run (injected at the stage's renames), then the rerun completes -------


def _shard_case(tmp: Path):
    ws = make_image_workspace(tmp / "ws", n=24, shape=(40, 32))
    return (lambda out: ["shard", "toy", "-w", ws.root, "--out", out, "--samples-per-shard", "4", "--no-progress"],
            lambda out: tree_bytes(out, "toy-*.tar"))  # fmt: skip


def _pretrain_case(tmp: Path):
    from tests.faults.test_kill_resume import _toy_pretrain_shards

    shards = _toy_pretrain_shards(tmp / "shards")

    def outputs(out: Path) -> dict:
        import torch

        from pipeline.pretrain.run_folder import read_metrics

        state = torch.load(out / "model.pt", weights_only=True)
        return {"losses": [r["loss"] for r in read_metrics(out / "metrics.jsonl")],
                "model": {k: v.numpy().tobytes() for k, v in state.items()}}  # fmt: skip

    return (lambda out: ["pretrain", "--config", "cpu_tiny", "--shards", shards, "--out", out, "--no-progress",
                         "--steps", "6", "--set", "train.checkpoint_every=2", "--set", "train.keep_checkpoints=5"]
            + (["--resume"] if out.is_dir() else []),
            outputs)  # fmt: skip


def _probe_case(tmp: Path):
    from tests.pipeline.probe.conftest import make_workspace

    base = make_workspace(tmp / "base")

    def args(out: Path) -> list[object]:
        if not out.exists():
            shutil.copytree(base.root, out)
        return ["probe", "-w", out, "--head", "linear", "--dataset", "toy", "--epochs", "4", "--lrs", "1e-3,1e-2",
                "--resamples", "20"]  # fmt: skip

    return args, lambda out: next(out.glob("results/toy/*/linear@*/predictions.parquet")).read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "case", "fail_after"), [("shard", _shard_case, 3), ("pretrain", _pretrain_case, 3),
                                                          ("probe", _probe_case, 3)])  # fmt: skip
def test_a_full_disk_mid_run_is_a_clear_error_and_the_rerun_completes_identically(tmp_path, stage, case, fail_after):
    args, outputs = case(tmp_path)
    reference_out, out = tmp_path / "reference", tmp_path / "out"
    reference = subprocess.Popen(chex_cmd(*args(reference_out)), cwd=REPO, env=chex_env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    full = run_chex(*args(out), disk_full_after=fail_after)
    assert_user_error(full, "no space left", "free some space", "rerun the same command")
    resumed = run_chex(*args(out))
    assert_ok(resumed)
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    assert outputs(out) == outputs(reference_out)
