"""`chex shard` checks that the images exist before anything is written, and a rerun with nothing to do leaves
the index as it is."""

from __future__ import annotations

import pytest

from pipeline.errors import ShardError
from tests.faults.conftest import assert_user_error, make_image_workspace, mtimes, run_chex


def test_shard_with_every_image_missing_exits_2_and_writes_nothing(tmp_path):
    ws = make_image_workspace(tmp_path / "ws", n=8)
    result = run_chex("shard", "toy", "-w", ws.root, "--root", tmp_path / "elsewhere", "--no-progress")
    assert_user_error(result, "only 0 of 8 images exist", "--root")
    assert not ws.shards_dir("toy").exists() or not any(ws.shards_dir("toy").glob("*.tar"))


def test_shard_refuses_below_the_readable_fraction(tmp_path):
    from pipeline.shard.dataset import shard_dataset

    ws = make_image_workspace(tmp_path / "ws", n=8)
    for image in sorted(ws.images_dir("toy").glob("*.png"))[:5]:
        image.unlink()
    args = (ws.manifest_path("toy"), ws.images_dir("toy"), ws.shards_dir("toy"), "toy")
    with pytest.raises(ShardError, match="only 3 of 8"):
        shard_dataset(*args, progress=False)
    summary = shard_dataset(*args, progress=False, min_readable=0.25)  # the user says 3 of 8 is enough
    assert summary.n_samples == 3 and summary.n_quarantined == 5


def test_a_rerun_with_nothing_to_do_rewrites_nothing(tmp_path):
    from pipeline.shard.dataset import shard_dataset

    ws = make_image_workspace(tmp_path / "ws", n=8)
    args = (ws.manifest_path("toy"), ws.images_dir("toy"), ws.shards_dir("toy"), "toy")
    first = shard_dataset(*args, samples_per_shard=3, progress=False)
    before = mtimes(ws.shards_dir("toy"))
    again = shard_dataset(*args, samples_per_shard=3, progress=False)
    assert mtimes(ws.shards_dir("toy")) == before
    assert (again.n_shards, again.n_samples, again.written, again.skipped) == (first.n_shards, 8, 0, first.n_shards)
