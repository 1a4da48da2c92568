"""Inputs that used to end in a traceback (issue 26, item 8) are one-line errors (exit 2) naming what is wrong and
what to do, found before anything is written."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.faults.conftest import CHEX_MAIN, REPO, assert_user_error, chex_env, run_chex_many
from tests.pipeline.probe.conftest import make_workspace
from tests.pipeline.stats.conftest import make_scores, predictions_frame


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lines")
    ws = make_workspace(tmp / "ws", n_patients=12)
    text = tmp / "notes.txt"
    text.write_text("this is not a checkpoint\n")
    root = ws.root
    compress = ["store", "compress", "toy-vit", "--rank", "4", "-w", root]
    pretrain = ["pretrain", "--config", "cpu_tiny", "--steps", "1", "-w", root, "--set"]
    cases = {
        "text_checkpoint": ["embed", "toy", "-w", root, "--checkpoint", text, "--backbone", "t"],
        "text_init_from": ["pretrain", "--config", "cpu_tiny", "-w", root, "--init-from", text],
        "probe_absent_dataset": ["probe", "-w", root, "--dataset", "plco"],
        "export_into_a_folder": ["store", "export", "toy-vit", "-w", root, "--out", root / "features"],
        "fit_images_negative": [*compress, "--out", "r1", "--fit-images", "-1"],
        "unit_rows_negative": [*compress, "--out", "r2", "--unit-rows", "-5"],
        "patch_size_zero": [*pretrain, "model.backbone_overrides.patch_size=0"],
        "embed_dim_negative": [*pretrain, "model.backbone_overrides.embed_dim=-4"],
    }
    return run_chex_many(cases, tmp / "logs"), ws


@pytest.mark.parametrize(
    ("case", "needles"),
    [
        ("text_checkpoint", ["notes.txt is not a checkpoint", "starts with the text"]),
        ("text_init_from", ["--init-from", "is not a checkpoint"]),
        ("probe_absent_dataset", ["no data set 'plco'", "chex manifest plco", "chex embed plco"]),
        ("export_into_a_folder", ["is a folder; give a file name"]),
        ("fit_images_negative", ["--fit-images -1: must be at least 0"]),
        ("unit_rows_negative", ["--unit-rows -5: must be at least 0"]),
        ("patch_size_zero", ["model.backbone_overrides.patch_size = 0", "out of range"]),
        ("embed_dim_negative", ["model.backbone_overrides.embed_dim = -4", "out of range"]),
    ],
)
def test_a_bad_input_is_one_line(done, case, needles):
    results, _ = done
    err = assert_user_error(results[case], *needles)
    assert len(results[case].stderr.strip().splitlines()) == 1, err


def test_a_refused_compress_leaves_no_half_made_store(done):
    _, ws = done
    assert not ws.features_dir("r1").exists() and not ws.features_dir("r2").exists()


# os.open / os.mkdir of anything new under the workspace fail as on a read-only mount (EROFS)
_READ_ONLY = """
import errno, os
_root = {root!r}
_open, _mkdir = os.open, os.mkdir
def _refuse(path):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
def _ro_open(path, flags, *args, **kwargs):
    if os.path.abspath(path).startswith(_root) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
        _refuse(path)
    return _open(path, flags, *args, **kwargs)
def _ro_mkdir(path, *args, **kwargs):
    if os.path.abspath(path).startswith(_root) and not os.path.exists(path):
        _refuse(path)
    return _mkdir(path, *args, **kwargs)
os.open, os.mkdir = _ro_open, _ro_mkdir
"""


@pytest.mark.parametrize("command", [["probe", "--head", "linear", "--dataset", "toy"], ["report", "-q"]])
def test_a_read_only_workspace_is_one_line(done, command):
    _, ws = done
    run = ws.root / "results" / "toy" / "x" / "linear"  # something to report
    if not run.is_dir():
        run.mkdir(parents=True)
        predictions_frame(*make_scores(0, n=40), dataset="toy", backbone="x").to_parquet(run / "predictions.parquet")
    code = _READ_ONLY.format(root=str(ws.root.resolve())) + CHEX_MAIN
    done_ = subprocess.run([sys.executable, "-c", code, *command, "-w", str(ws.root)], cwd=REPO, env=chex_env(),
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert_user_error(done_, "read-only", "copy the workspace to a writable place", str(ws.root))
