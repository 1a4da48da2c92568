"""The same seed and inputs give byte-identical predictions on CPU across two runs (separate processes)."""

from __future__ import annotations

import shutil
import subprocess

import pandas as pd
import pytest

from tests.faults.conftest import REPO, chex_cmd, chex_env


@pytest.mark.slow
def test_two_probe_runs_with_one_seed_give_byte_identical_predictions(tmp_path):
    from tests.pipeline.probe.conftest import make_workspace

    ws = make_workspace(tmp_path / "a")
    shutil.copytree(ws.root, tmp_path / "b")
    args = ["--head", "linear,glori", "--dataset", "toy", "--epochs", "3", "--lrs", "1e-3,1e-2", "--resamples", "50",
            "--seed", "3"]  # fmt: skip
    procs = [
        subprocess.Popen(
            chex_cmd("probe", "-w", tmp_path / name, *args),
            cwd=REPO,
            env=chex_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    for head in ("linear", "glori"):
        files = [next((tmp_path / name).glob(f"results/toy/*/{head}@*/predictions.parquet")) for name in ("a", "b")]
        a, b = (pd.read_parquet(f) for f in files)
        assert len(a) > 0 and a["score"].notna().all()
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        assert a["score"].to_numpy().tobytes() == b["score"].to_numpy().tobytes()  # byte-identical scores
        assert files[0].read_bytes() == files[1].read_bytes()  # and the same file
        for name in ("results.parquet", "sweep.parquet", "head.pt"):
            assert (files[0].parent / name).read_bytes() == (files[1].parent / name).read_bytes(), (head, name)
