from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from pipeline.cli import app
from tests.pipeline.probe.conftest import make_workspace

runner = CliRunner()


def test_chex_probe_runs_label_fractions_and_reports(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    args = ["probe", "--head", "linear", "--dataset", "toy", "--epochs", "1", "--lrs", "1e-3,1e-2",
            "--label-fraction", "0.5,1.0", "--resamples", "10", "-w", str(ws.root)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "lr" in result.output and "test macro AUROC" in result.output
    (base,) = ws.results_dir("toy", "toy-vit", "linear").parent.glob("linear@lrs2-ep1-*")  # not the defaults
    assert (base / "run.json").is_file() and (base / "label_fraction=0.5" / "predictions.parquet").is_file()
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and again.output.count("already done") == 2


def test_chex_probe_errors_are_clean(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    result = runner.invoke(app, ["probe", "--head", "resnet", "--dataset", "toy", "-w", str(ws.root)])
    assert result.exit_code == 2 and "known heads" in result.output
    result = runner.invoke(app, ["probe", "--dataset", "toy", "--lrs", "fast", "-w", str(ws.root)])
    assert result.exit_code == 2 and "--lrs" in result.output


def test_chex_probe_glori_width_options_reach_the_head(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    args = ["probe", "--head", "glori", "--dataset", "toy", "--epochs", "1", "--lrs", "1e-3", "--resamples", "10",
            "--glori-dim", "16", "--glori-ffn-dim", "24", "-w", str(ws.root)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (folder,) = ws.results_dir("toy", "toy-vit", "glori").parent.glob("glori@dim16-ffn24-*")
    state = torch.load(folder / "head.pt", weights_only=True)
    weights = state.get("state_dict", state)
    assert tuple(weights["linear1.weight"].shape) == (24, 16)
    result = runner.invoke(app, [*args[:-2], "--glori-dim", "12", "-w", str(ws.root)])
    assert result.exit_code == 2 and "--glori-dim 12" in result.output


def test_chex_probe_protocol_options_reach_the_config(tmp_path):
    ws = make_workspace(tmp_path / "ws", n_patients=30)
    args = ["probe", "--head", "linear", "--dataset", "toy", "--epochs", "1", "--lrs", "1e-3,1e-2", "--resamples",
            "10", "--selection", "loss", "--seeds", "2", "--standardize", "-w", str(ws.root)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (folder,) = ws.results_dir("toy", "toy-vit", "linear").parent.glob("linear@*")  # a configuration of its own
    assert "sel" in folder.name and "seeds2" in folder.name and "std" in folder.name
    record = json.loads((folder / "run.json").read_text())
    assert record["config"]["selection"] == "loss" and record["config"]["seeds"] == 2
    assert record["config"]["standardize"] is True and record["data"]["seeds"] == [0, 1]
    bad = runner.invoke(app, ["probe", "--dataset", "toy", "--selection", "best", "-w", str(ws.root)])
    assert bad.exit_code == 2 and "--selection" in bad.output
    bad = runner.invoke(app, ["probe", "--dataset", "toy", "--cv", "5", "--seeds", "2", "-w", str(ws.root)])
    assert bad.exit_code == 2 and "--cv-repeats" in bad.output
