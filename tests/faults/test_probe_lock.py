"""One writer per probe run folder: a second `run_probe` of the same run refuses, naming the holder."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from pipeline.errors import ChexError


def test_a_second_probe_of_the_same_run_refuses_naming_the_holder(tmp_path):
    from pipeline.probe import ProbeConfig, run_probe
    from pipeline.probe.protocol import run_folder
    from tests.pipeline.probe.conftest import make_workspace as make_probe_workspace

    ws = make_probe_workspace(tmp_path / "ws")
    backbone = next((ws.root / "features").iterdir()).name
    config = ProbeConfig(lrs=(1e-2,), epochs=1, n_resamples=10)
    folder = run_folder(ws, "toy", backbone, "linear", config).root
    folder.mkdir(parents=True)
    holder = {"host": socket.gethostname(), "pid": os.getppid(), "time": time.time()}  # a live process
    (folder / ".chex-lock").write_text(json.dumps(holder))
    with pytest.raises(ChexError, match=rf"pid {os.getppid()}"):
        run_probe(ws, "toy", "linear", config=config, progress=False)
    assert not (folder / "results.parquet").exists()

    holder["pid"] = 2**22 + 11  # a dead process on this host: its lock is taken over, the run goes ahead
    (folder / ".chex-lock").write_text(json.dumps(holder))
    summary = run_probe(ws, "toy", "linear", config=config, progress=False)
    assert (summary.folder / "results.parquet").is_file() and not (folder / ".chex-lock").exists()
