"""`--sweep halving` (successive halving over the lrs) and `--micro-batch` (bounded memory, same gradients)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from heads import HeadStack, build_head
from pipeline.errors import ConfigError
from pipeline.probe import ProbeConfig, run_probe
from pipeline.probe.data import Features
from pipeline.probe.halving import rung_epochs
from pipeline.probe.sweep import TrainSpec, train_stack
from pipeline.store import FeatureStore

GLORI_NO_DROPOUT = {"embed_dim": 16, "ffn_dim": 32, "dropout": 0.0}


def test_rung_epochs_halve_the_lrs_at_fixed_fractions():
    assert rung_epochs(9, 10) == [1, 2, 5]  # 9 -> 4 -> 2 -> 1 at E/8, E/4, E/2
    assert rung_epochs(9, 100) == [12, 25, 50]
    assert rung_epochs(4, 8) == [2, 4] and rung_epochs(1, 10) == [] and rung_epochs(2, 1) == [1]


def test_halving_sweep_stops_the_worse_half_and_resumes_after_a_kill(toy_workspace, monkeypatch):
    from pipeline.probe import sweep

    config = ProbeConfig(n_resamples=30, epochs=8, lrs=(1e-4, 1e-3, 1e-2, 5e-2), sweep="halving")
    ref = run_probe(toy_workspace, "toy", "mlp", config=config, progress=False)
    table = pd.read_parquet(ref.folder / "sweep.parquet")
    assert sorted(table["epochs_trained"]) == [2, 2, 4, 8] and table["chosen"].sum() == 1
    chosen = table[table["chosen"]]
    assert chosen["epochs_trained"].item() == 8 and chosen["lr"].item() == ref.chosen_lr
    assert (table["selected_by"] == "val_macro_auroc (successive halving)").all()
    # the lrs kept at the first rung had the best val AUROC there
    first = table[table["epochs_trained"] == 2]
    kept = table[table["epochs_trained"] > 2]
    assert len(first) == 2 and len(kept) == 2
    run = json.loads((ref.folder / "run.json").read_text())
    assert run["config"]["sweep"] == "halving"
    want = pd.read_parquet(ref.folder / "predictions.parquet")

    original, calls = sweep._checkpoint, {"n": 0}

    def killed_after_first_rung(path, key, epoch, *args):
        original(path, key, epoch, *args)
        if path.name == "sweep.pt" and epoch == 2:
            calls["n"] += 1
            if calls["n"] == 2:  # the second checkpoint at epoch 2 records the rung's decision
                raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "_checkpoint", killed_after_first_rung)
    with pytest.raises(KeyboardInterrupt):
        run_probe(toy_workspace, "toy", "mlp", config=config, force=True, progress=False)
    monkeypatch.setattr(sweep, "_checkpoint", original)
    (ref.folder / "run.json").unlink()
    again = run_probe(toy_workspace, "toy", "mlp", config=config, progress=False)
    assert again.chosen_lr == ref.chosen_lr
    pd.testing.assert_frame_equal(pd.read_parquet(ref.folder / "predictions.parquet"), want)


def test_full_sweep_key_is_unchanged_by_the_new_options():
    assert "sweep" not in ProbeConfig().identity() and "micro_batch" not in ProbeConfig().identity()
    assert ProbeConfig(sweep="halving").identity()["sweep"] == "halving"
    with pytest.raises(ConfigError, match="--sweep"):
        ProbeConfig(sweep="random")
    with pytest.raises(ConfigError, match="--micro-batch 5 must divide"):
        TrainSpec((1e-3,), 1, 16, micro_batch=5)


@pytest.mark.parametrize("cache_bytes", [2 << 30, 0])  # cached in memory, streamed from the store
def test_micro_batches_give_the_same_training_as_whole_batches(toy_workspace, cache_bytes):
    store = FeatureStore.open(toy_workspace.features_dir("toy-vit"))
    manifest = pd.read_parquet(toy_workspace.manifest_path("toy"))
    features = Features(store, manifest["image_id"].tolist(), ("cls", "patch"), cache_bytes=cache_bytes)
    labels = manifest[["Cardiomegaly", "Effusion", "Nodule"]].to_numpy(dtype=np.float64)
    positions = np.arange(0, 100)
    stacks = {}
    for micro in (0, 4):
        torch.manual_seed(0)
        stack = HeadStack(lambda: build_head("glori", dim=16, n_layers=2, n_outputs=3, **GLORI_NO_DROPOUT), 3)
        spec = TrainSpec((1e-3, 3e-3, 1e-2), epochs=2, batch_size=16, micro_batch=micro)
        stacks[micro] = train_stack(stack, features, positions, labels, spec, torch.device("cpu"), progress=False)
    for (name, a), b in zip(stacks[0].named_parameters(), stacks[4].parameters(), strict=True):
        if name.endswith("attn.in_proj_bias"):
            # the key bias cancels in the softmax: its gradient is float noise, which Adam scales up to lr-sized
            # steps, so only its query and value parts are comparable
            a, b = torch.cat([a[:16], a[32:]]), torch.cat([b[:16], b[32:]])
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4, msg=name)
    tokens = store.read(store.rows(manifest["image_id"].tolist()[100:120]))
    with torch.no_grad():
        want = stacks[0].eval()(tokens["cls"], tokens["patch"])
        torch.testing.assert_close(stacks[4].eval()(tokens["cls"], tokens["patch"]), want, atol=1e-5, rtol=1e-4)
    torch.manual_seed(0)
    untrained = HeadStack(lambda: build_head("glori", dim=16, n_layers=2, n_outputs=3, **GLORI_NO_DROPOUT), 3)
    assert (untrained.eval()(tokens["cls"], tokens["patch"]) - want).abs().max() > 1e-2  # it did train


def test_cli_probe_sweep_halving_and_micro_batch(toy_workspace):
    from typer.testing import CliRunner

    from pipeline.cli import app

    args = ["probe", "--head", "linear", "--lrs", "1e-3,1e-2", "--epochs", "2", "--resamples", "20",
            "--sweep", "halving", "--micro-batch", "8", "-w", str(toy_workspace.root)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (folder,) = toy_workspace.results_dir("toy", "toy-vit", "linear").parent.glob("linear@*-sweephalving-mb8-*")
    table = pd.read_parquet(folder / "sweep.parquet")
    assert sorted(table["epochs_trained"]) == [1, 2]
    bad = CliRunner().invoke(app, [*args[:-2], "--micro-batch", "7", "--force", "-w", str(toy_workspace.root)])
    assert bad.exit_code == 2 and "--micro-batch 7 must divide" in bad.output
