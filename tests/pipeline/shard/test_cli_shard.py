from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.cli.shard import parse_size
from pipeline.manifest import write_manifest
from pipeline.shard import read_index, read_quarantine, shard_paths
from tests.pipeline.shard.conftest import BAD, GOOD_IDS, SourceSet

runner = CliRunner()


def _flat(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())


def _workspace(tmp_path: Path, source_set: SourceSet) -> Path:
    ws = tmp_path / "ws"
    (ws / "images").mkdir(parents=True)
    os.symlink(source_set.root, ws / "images" / "ds")
    write_manifest(source_set.manifest, ws / "manifests" / "ds.parquet")
    return ws


def test_cli_shards_a_workspace_data_set_and_reports_missing_files(source_set: SourceSet, tmp_path: Path) -> None:
    ws = _workspace(tmp_path, source_set)
    result = runner.invoke(app, ["shard", "ds", "-w", str(ws), "--shard-size", "12KB", "--no-progress"])
    assert result.exit_code == 0, result.output
    text = _flat(result.output)
    assert f"{len(GOOD_IDS)} samples" in text and f"{len(BAD)} quarantined" in text
    assert "1 missing file(s)" in text and "gone/never.png" in text
    assert "cannot decode PNG (truncated file" in text and "cannot decode JPEG (truncated file" in text
    out = ws / "shards" / "ds"
    assert len(shard_paths(out)) >= 3 and len(read_quarantine(out)) == len(BAD)

    again = runner.invoke(app, ["shard", "ds", "-w", str(ws), "--shard-size", "12KB", "--no-progress"])
    assert again.exit_code == 0 and "(0 written" in _flat(again.output)


def test_cli_rejects_bad_options_cleanly(source_set: SourceSet, tmp_path: Path) -> None:
    ws = _workspace(tmp_path, source_set)
    result = runner.invoke(app, ["shard", "ds", "-w", str(ws), "--shard-size", "lots"])
    assert result.exit_code == 2 and "--shard-size" in result.output
    result = runner.invoke(app, ["shard", "nope", "-w", str(ws)])
    assert result.exit_code == 2 and "no manifest" in result.output
    assert parse_size("1GB") == 1e9 and parse_size("64MiB") == 64 * 2**20 and parse_size("2.5e6") == 2.5e6


SLOW_CLI = """
import sys, time
import pipeline.shard.writer as writer
real = writer._sample_png
def slow(*args, **kwargs):
    time.sleep(0.15)
    return real(*args, **kwargs)
writer._sample_png = slow
from pipeline.cli import main
sys.argv = ["chex", *sys.argv[1:]]
main()
"""


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_finishes_identically(tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        Image.fromarray(rng.integers(0, 65536, (32, 32), dtype=np.uint16)).save(root / f"{i}.png")
        rows.append({"image_id": f"k_p{i}_0", "path": f"{i}.png", "patient_id": f"p{i}", "split": "train"})
    manifest = tmp_path / "m.parquet"
    write_manifest(pd.DataFrame(rows), manifest)
    args = ["shard", "k", "--manifest", str(manifest), "--root", str(root), "--samples-per-shard", "2"]
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}

    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_CLI, *args, "--out", str(out), "--no-progress"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while len(list(out.glob("*.done.json"))) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = sorted(p.name.removesuffix(".done.json") for p in out.glob("*.done.json"))
    assert 3 <= len(done_before) < 12, "the run was not killed mid-way"
    mtimes = {name: (out / name).stat().st_mtime_ns for name in done_before}
    if (out / "index.parquet").exists():  # whatever index exists lists only finished shards
        assert set(read_index(out)["shard"]) <= set(done_before)

    rerun = runner.invoke(app, [*args, "--out", str(out), "--no-progress"])  # in-process: same code path
    assert rerun.exit_code == 0, rerun.output
    assert f"{12 - len(done_before)} written, {len(done_before)} reused" in _flat(rerun.output)
    assert all((out / name).stat().st_mtime_ns == mtimes[name] for name in done_before)

    reference = tmp_path / "ref"
    assert runner.invoke(app, [*args, "--out", str(reference), "--no-progress"]).exit_code == 0
    produced = {p.name: p.read_bytes() for p in shard_paths(out)}
    assert len(produced) == 12 and produced == {p.name: p.read_bytes() for p in shard_paths(reference)}
    assert not list(out.glob("*.tmp"))
