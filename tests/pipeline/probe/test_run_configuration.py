"""A run folder is named by data set, backbone, head and label fraction: a run of another head configuration
is never written over it silently, and the head's options come from its declaration (heads.registry)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import ConfigError
from pipeline.probe import ProbeConfig, run_probe
from tests.pipeline.probe.conftest import make_workspace

runner = CliRunner()


def test_a_run_of_another_head_configuration_is_not_replaced_without_force(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    narrow = ProbeConfig(lrs=(1e-2,), epochs=1, n_resamples=10, head_options={"embed_dim": 16, "ffn_dim": 16})
    first = run_probe(ws, "toy", "glori", config=narrow, progress=False)
    wide = ProbeConfig(lrs=(1e-2,), epochs=1, n_resamples=10, head_options={"embed_dim": 32, "ffn_dim": 16})
    with pytest.raises(ConfigError, match=r"head_config\.embed_dim: 16 there, 32 now.*--force"):
        run_probe(ws, "toy", "glori", config=wide, progress=False)
    state = torch.load(first.folder / "head.pt", weights_only=True)
    assert state["embed.weight"].shape[0] == 16  # the narrow run is still there
    replaced = run_probe(ws, "toy", "glori", config=wide, force=True, progress=False)
    record = json.loads((replaced.folder / "run.json").read_text())
    assert record["head_config"] == {"name": "glori", "embed_dim": 32, "num_heads": 8, "ffn_dim": 16,
                                     "dropout": 0.1, "train_queries": False}  # fmt: skip


def test_probe_flags_come_from_the_head_declarations(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    args = ["probe", "--head", "mlp", "--dataset", "toy", "--epochs", "1", "--lrs", "1e-3", "--resamples", "10",
            "--mlp-hidden", "12", "-w", str(ws.root)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    state = torch.load(ws.results_dir("toy", "toy-vit", "mlp") / "head.pt", weights_only=True)
    assert tuple(state["fc1.weight"].shape) == (12, 2 * 16)
    bad = runner.invoke(app, [*args[:-4], "--mlp-dropout", "1.5", "-w", str(ws.root)])
    assert bad.exit_code == 2 and "--mlp-dropout 1.5" in bad.output
