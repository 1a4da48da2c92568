"""Real processes: `chex pretrain` killed with SIGKILL and resumed, and a 2-rank torchrun (gloo) run."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline.pretrain.run_folder import read_metrics

CHEX = str(Path(sys.executable).parent / "chex")
TORCHRUN = str(Path(sys.executable).parent / "torchrun")


def _cli(shards, out, *extra):
    args = [CHEX, "pretrain", "--config", "cpu_tiny", "--out", str(out), "--no-progress"]
    for shard in shards:
        args += ["--shards", str(shard)]
    return args + list(extra)


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_kill_9_then_resume_reaches_the_same_end_with_the_same_losses(toy_shards, tmp_path):
    steps = ["--steps", "40", "--set", "train.checkpoint_every=4"]
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli(toy_shards, out, *steps), env=_env(), stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (out / "step_000004").is_dir() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "model.pt").exists()
    done = subprocess.run(_cli(toy_shards, out, *steps, "--resume"), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    resumed = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in resumed] == list(range(1, 41))
    reference = tmp_path / "reference"  # uninterrupted, in a process with the same thread settings
    subprocess.run(_cli(toy_shards, reference, *steps), env=_env(), check=True, capture_output=True)
    expected = read_metrics(reference / "metrics.jsonl")
    # CPU, same data order and RNG states: the resumed run is the uninterrupted one, bit for bit.
    assert [r["loss"] for r in resumed] == [r["loss"] for r in expected]
    a = torch.load(out / "model.pt", weights_only=True)
    b = torch.load(reference / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_torchrun_two_cpu_ranks(toy_shards, tmp_path):
    out = tmp_path / "ddp"
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node=2", *_cli(toy_shards, out, "--steps", "4")]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert records[0]["images_per_s"] > 0
    state = torch.load(out / "step_000004" / "train_state.pt", weights_only=True)
    assert sorted(state["rng"]) == [0, 1]  # both ranks' RNG states kept for resume
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    assert (out / "model.pt").is_file() and shutil.which(CHEX)
