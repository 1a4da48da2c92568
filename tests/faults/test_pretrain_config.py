"""Pretraining settings out of range are refused by name before anything runs (no untrained "finished" run)."""

from __future__ import annotations

import pytest

from tests.faults.conftest import assert_user_error, run_chex_many

CASES = {
    "steps_0": (["--steps", "0"], "train.total_steps"),
    "steps_negative": (["--steps", "-5"], "train.total_steps"),
    "epochs_negative": (["--epochs", "-1"], "optim.epochs"),
    "lr_negative": (["--set", "optim.base_lr=-1"], "optim.base_lr"),
    "batch_0": (["--set", "train.batch_size_per_rank=0"], "train.batch_size_per_rank"),
    "local_crops_negative": (["--set", "crops.local_crops_number=-2"], "crops.local_crops_number"),
    "crop_scale_reversed": (["--set", "crops.global_crops_scale=[0.9,0.5]"], "crops.global_crops_scale"),
    "name_escapes": (["--name", "../../X"], "../../X"),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pretrain-config")
    (tmp / "ws" / "shards" / "toy").mkdir(parents=True)
    cases = {k: ["pretrain", "-w", tmp / "ws", "--config", "cpu_tiny", *argv] for k, (argv, _) in CASES.items()}
    return run_chex_many(cases, tmp / "logs"), tmp


@pytest.mark.parametrize("case", sorted(CASES))
def test_out_of_range_setting_is_refused_naming_it(results, case):
    done, tmp = results
    assert_user_error(done[case], CASES[case][1])
    assert not (tmp / "ws" / "checkpoints").exists() and not (tmp / "X").exists()
