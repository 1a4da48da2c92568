"""kill -9 `chex store compress` at random moments, then rerun: the projected store equals the uninterrupted one."""

from __future__ import annotations

import numpy as np
import pytest

from tests.faults.conftest import assert_ok, kill_after_progress, make_image_workspace, make_tiny_checkpoint, run_chex

pytestmark = pytest.mark.slow


def _done(store):
    return sorted(p.name for p in (store / "ledger" / "done").glob("unit-*.json")) if store.is_dir() else []


def test_compress_killed_at_random_moments_resumes_to_the_uninterrupted_store(tmp_path):
    from pipeline.store import FeatureStore

    ws = make_image_workspace(tmp_path / "ws", n=96)
    make_tiny_checkpoint(ws)
    assert_ok(run_chex("embed", "toy", "-w", ws.root, "--checkpoint", ws.checkpoints_dir("tiny"), "--backbone",
                       "full", "--source", "manifest", "--workers", "0"))  # fmt: skip
    args = lambda out: ["store", "compress", "full", "--out", out, "--rank", "6", "--dtype", "int8",  # noqa: E731
                        "--unit-rows", "4", "-w", ws.root]  # fmt: skip
    assert_ok(run_chex(*args("reference")))
    store = ws.features_dir("killed")
    rng = np.random.default_rng(7)
    kills = 0
    for _ in range(2):
        target = len(_done(store)) + int(rng.integers(1, 6))
        kills += kill_after_progress(args("killed"), lambda t=target: len(_done(store)) >= t, rng, 0.05)
    assert kills >= 1
    assert_ok(run_chex(*args("killed")))
    a, b = FeatureStore.open(ws.features_dir("reference")), FeatureStore.open(store)
    assert b.complete and len(b) == len(a) == 96
    ids = sorted(a.image_ids)
    ra, rb = a.read(a.rows(ids)), b.read(b.rows(ids))
    for part in ("cls", "patch"):
        np.testing.assert_array_equal(ra[part].numpy(), rb[part].numpy())
    np.testing.assert_array_equal(a.projection.basis, b.projection.basis)
