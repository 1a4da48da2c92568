"""Pretraining's heads.pt / train_state.pt and a probe's .partial/sweep.pt that are empty, truncated or carry
pickled code are refused with a message naming the file (never an UnpicklingError or a bare 'Aborted.')."""

from __future__ import annotations

import pathlib

import pytest
import torch

from pipeline.errors import CheckpointError


class _PickledCode:
    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def _bad_files(tmp_path) -> dict[str, pathlib.Path]:
    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(64, 64)}, good)
    files = {"empty": tmp_path / "empty.pt", "truncated": tmp_path / "truncated.pt", "pickled": tmp_path / "code.pt"}
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    torch.save({"state": _PickledCode(tmp_path / "code-ran")}, files["pickled"])
    return files


@pytest.mark.parametrize("kind", ["empty", "truncated", "pickled"])
def test_pretrain_state_files_are_refused_by_name(tmp_path, kind):
    from pipeline.pretrain import run_folder

    path = _bad_files(tmp_path)[kind]
    with pytest.raises(CheckpointError, match=path.name):
        run_folder.load_tensors(path)
    assert not (tmp_path / "code-ran").exists()


@pytest.mark.parametrize("kind", ["empty", "truncated", "pickled"])
def test_probe_partial_sweep_state_is_refused_by_name(tmp_path, kind):
    from pipeline.probe import sweep

    path = _bad_files(tmp_path)[kind]
    with pytest.raises(CheckpointError, match=path.name):
        sweep._resume(path, "key", None, None, None)
    assert not (tmp_path / "code-ran").exists()
