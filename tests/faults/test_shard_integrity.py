"""A shard tar that lost members (same size, tail zeroed from a member boundary) is never read as complete:
the index's n_samples and sha256 are compared, and a mismatch is a ShardError naming the shard."""

from __future__ import annotations

import tarfile

import pytest

from pipeline.errors import ShardError
from tests.faults.conftest import assert_ok, assert_user_error, make_image_workspace, make_tiny_checkpoint, run_chex


def _lose_tail(shard, keep_samples: int) -> None:
    """Zero the tar from the header of sample `keep_samples` to the end: same size, fewer members."""
    with tarfile.open(shard) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
    offset = members[2 * keep_samples].offset  # two members (png + json) per sample
    data = bytearray(shard.read_bytes())
    data[offset:] = bytes(len(data) - offset)
    shard.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    ws = make_image_workspace(tmp_path_factory.mktemp("ws"), n=24)
    make_tiny_checkpoint(ws)
    assert_ok(run_chex("shard", "toy", "-w", ws.root, "--samples-per-shard", "8", "--no-progress"))
    shard = sorted(ws.shards_dir("toy").glob("toy-*.tar"))[1]
    size = shard.stat().st_size
    _lose_tail(shard, 5)
    assert shard.stat().st_size == size
    return ws, shard


def test_reading_a_shard_that_lost_members_is_refused(sharded):
    from pipeline.shard.reader import iter_samples, shard_paths

    ws, shard = sharded
    with pytest.raises(ShardError, match=shard.name):
        list(iter_samples(shard_paths(ws.shards_dir("toy"))))


def test_embed_from_shards_refuses_a_shard_that_lost_members(sharded):
    ws, shard = sharded
    result = run_chex(
        "embed", "toy", "-w", ws.root, "--checkpoint", ws.checkpoints_dir("tiny"), "--source", "shards",
        "--workers", "0", "--batch-size", "4", "--unit-rows", "4",
    )  # fmt: skip
    assert_user_error(result, shard.name, "n_samples")
