from __future__ import annotations

import pandas as pd
from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()


def test_synth_command_prints_summary_and_writes_the_workspace(tmp_path):
    ws = tmp_path / "ws"
    args = ["synth", "--size", "tiny", "--datasets", "jsrt,plco", "--seed", "2", "-w", str(ws)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "jsrt" in result.output and "plco" in result.output and "SYNTHETIC" in result.output
    assert len(pd.read_parquet(ws / "manifests" / "jsrt.parquet")) == 50
    assert not (ws / "manifests" / "cxrlt24.parquet").exists()
    bad = runner.invoke(app, ["synth", "--size", "tiny", "--datasets", "mnist", "-w", str(ws)])
    assert bad.exit_code == 2 and "unknown synthetic data set" in bad.output
