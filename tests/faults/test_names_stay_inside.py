"""Every user-given name that becomes a file or folder is checked (pipeline.workspace.check_name): no command
writes outside the workspace through a name like ../../X."""

from __future__ import annotations

import pytest

from tests.faults.conftest import assert_user_error, make_image_workspace, make_tiny_checkpoint, run_chex_many


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("names")
    ws = make_image_workspace(tmp / "a" / "b" / "ws", n=6)
    make_tiny_checkpoint(ws)
    root = ws.root
    embed = ["embed", "toy", "-w", root, "--source", "manifest", "--workers", "0"]
    cases = {
        "embed_backbone": [*embed, "--checkpoint", ws.checkpoints_dir("tiny"), "--backbone", "../../X"],
        "embed_random_init": [*embed, "--random-init", "../../X"],
        "embed_dataset": ["embed", "../../X", "-w", root, "--checkpoint", ws.checkpoints_dir("tiny")],
        "pretrain_name": ["pretrain", "-w", root, "--config", "cpu_tiny", "--name", "../../X"],
        "manifest_folder_source": ["manifest", "folder", "-w", root, "--root", ws.images_dir("toy"),
                                   "-s", "../../../X"],
        "shard_name": ["shard", "../../X", "-w", root, "--root", ws.images_dir("toy"),
                       "--manifest", ws.manifest_path("toy"), "--no-progress"],
        "probe_dataset": ["probe", "-w", root, "--head", "linear", "--dataset", "../../X"],
    }  # fmt: skip
    return run_chex_many(cases, tmp / "logs"), tmp


@pytest.mark.parametrize(
    "case",
    ["embed_backbone", "embed_random_init", "embed_dataset", "pretrain_name", "manifest_folder_source",
     "shard_name", "probe_dataset"],
)  # fmt: skip
def test_a_name_that_climbs_out_is_refused(results, case):
    done, tmp = results
    assert_user_error(done[case], "not allowed")
    outside = [p for p in tmp.rglob("*X*") if "logs" not in p.parts]
    assert not outside, outside
