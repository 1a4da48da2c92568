"""Every --out goes through one rule (pipeline.workspace.out_file / out_folder): an existing file is replaced only
with --overwrite, the workspace's own files never, and no --out climbs out with '..' or lands in a parent folder."""

from __future__ import annotations

import pytest

from tests.faults.conftest import assert_ok, assert_user_error, run_chex_many, tree_bytes
from tests.pipeline.probe.conftest import make_workspace
from tests.pipeline.stats.conftest import make_scores, predictions_frame


def _run_folder(folder, noise: int):
    labels, scores, patients = make_scores(noise, n=60)
    folder.mkdir(parents=True)
    predictions_frame(labels, scores, patients).to_parquet(folder / "predictions.parquet")
    return folder


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("out")
    ws = make_workspace(tmp / "deep" / "ws", n_patients=12)
    ws.set_default_backbone("toy-vit")
    run_a = _run_folder(ws.root / "results" / "toy" / "toy-vit" / "linear", 0)
    run_b = _run_folder(ws.root / "results" / "toy" / "other" / "linear", 1)
    mine = tmp / "mine"
    mine.mkdir()
    (mine / "existing.npz").write_bytes(b"the user's own file")
    (mine / "existing.csv").write_text("keep me\n")
    (mine / "replace-me.npz").write_bytes(b"old")
    (mine / "folder-with-things").mkdir()
    (mine / "folder-with-things" / "notes.txt").write_text("mine\n")
    (tmp / "labels.csv").write_text("path,Finding\na.png,1\n")
    root = ws.root
    up = f"{root}/../.."  # the folder two above the workspace: tmp/
    before = tree_bytes(root, "manifests/*") | tree_bytes(root, "*.json") | tree_bytes(root, "results/**/*")
    export = ["store", "export", "toy-vit", "-w", root, "--overwrite"]
    compress = ["store", "compress", "toy-vit", "--rank", "4", "-w", root]
    cases = {
        "export_over_manifest": [*export, "--format", "parquet", "--out", ws.manifest_path("toy")],
        "export_over_settings": [*export, "--out", root / "workspace.json"],
        "export_into_store": [*export, "--out", root / "features" / "toy-vit" / "zarr.json"],
        "export_to_a_folder": [*export, "--out", root / "features"],
        "export_dotdot": [*export, "--out", f"{up}/outside/x.npz"],
        "export_existing": ["store", "export", "toy-vit", "-w", root, "--out", mine / "existing.npz"],
        "stats_over_manifest": ["stats", run_a, "--overwrite", "-w", root, "--out", ws.manifest_path("toy")],
        "stats_existing": ["stats", run_a, "-w", root, "--out", mine / "existing.csv"],
        "compare_over_predictions": ["compare", run_a, run_b, "--overwrite", "-w", root,
                                     "--out", run_a / "predictions.parquet"],
        "compare_existing": ["compare", run_a, run_b, "-w", root, "--out", mine / "existing.csv"],
        "custom_over_another_manifest": ["manifest", "custom", "other", "--labels", tmp / "labels.csv", "--root",
                                         tmp, "--overwrite", "-w", root, "--out", ws.manifest_path("toy")],
        "folder_dotdot": ["manifest", "folder", "src", "--root", tmp, "-w", root, "--out", f"{up}/outside/s.parquet"],
        "compress_into_parent": [*compress, "--out", f"{root}/.."],
        "compress_into_manifests": [*compress, "--out", root / "manifests"],
        "compress_into_a_users_folder": [*compress, "--out", mine / "folder-with-things"],
        "embed_dotdot": ["embed", "toy", "-w", root, "--random-init", "vit_tiny_patch16", "--out",
                         f"{up}/outside/store"],
        "pretrain_dotdot": ["pretrain", "--config", "cpu_tiny", "-w", root, "--out", f"{up}/outside/ck"],
        "pretrain_into_results": ["pretrain", "--config", "cpu_tiny", "-w", root, "--out", root / "results"],
        "shard_into_features": ["shard", "toy", "-w", root, "--out", root / "features"],
        # the forked cases run in this order: the user's file replaced with --overwrite, the default twice
        "overwrite_own_file": [*export, "--out", mine / "replace-me.npz"],
        "default_once": ["store", "export", "-w", root],
        "default_twice": ["store", "export", "-w", root],
    }  # fmt: skip
    results = run_chex_many(cases, tmp / "logs")
    after = tree_bytes(root, "manifests/*") | tree_bytes(root, "*.json") | tree_bytes(root, "results/**/*")
    return results, tmp, mine, before, after


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("export_over_manifest", "workspace's own manifests"),
        ("export_over_settings", "workspace's own workspace.json"),
        ("export_into_store", "workspace's own features"),
        ("export_to_a_folder", "is a folder"),
        ("export_dotdot", "'..' part is not allowed"),
        ("export_existing", "exists; pass --overwrite"),
        ("stats_over_manifest", "workspace's own manifests"),
        ("stats_existing", "exists; pass --overwrite"),
        ("compare_over_predictions", "workspace's own results"),
        ("compare_existing", "exists; pass --overwrite"),
        ("custom_over_another_manifest", "workspace's own manifests"),
        ("folder_dotdot", "'..' part is not allowed"),
        ("compress_into_parent", "'..' part is not allowed"),
        ("compress_into_manifests", "not a feature store folder"),
        ("compress_into_a_users_folder", "is not a feature store"),
        ("embed_dotdot", "'..' part is not allowed"),
        ("pretrain_dotdot", "'..' part is not allowed"),
        ("pretrain_into_results", "not a pretraining run folder"),
        ("shard_into_features", "not a shard set folder"),
    ],
)
def test_an_out_that_would_overwrite_or_escape_is_refused(done, case, needle):
    results, *_ = done
    assert_user_error(results[case], needle)


def test_nothing_was_overwritten_or_written_outside(done):
    _, tmp, mine, before, after = done
    assert after == before  # manifests, workspace.json and run folders byte for byte
    assert (mine / "existing.npz").read_bytes() == b"the user's own file"
    assert (mine / "existing.csv").read_text() == "keep me\n"
    assert sorted(p.name for p in (mine / "folder-with-things").iterdir()) == ["notes.txt"]
    assert not (tmp / "outside").exists()
    assert not (tmp / "deep" / "zarr.json").exists()  # no store in the workspace's parent folder


def test_overwrite_replaces_the_users_own_file_and_a_new_export_is_written_once(done):
    results, _, mine, *_ = done
    assert_ok(results["overwrite_own_file"])
    assert (mine / "replace-me.npz").read_bytes()[:2] == b"PK"  # an npz now
    assert_ok(results["default_once"])  # exports/toy-vit.npz: a new file inside the workspace is fine
    assert_user_error(results["default_twice"], "exists; pass --overwrite")
