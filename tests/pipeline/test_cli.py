from __future__ import annotations

from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()


def test_help_lists_every_stage_with_a_purpose():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "synth", "manifest", "shard", "pretrain", "embed", "probe", "report"):
        assert command in result.output
