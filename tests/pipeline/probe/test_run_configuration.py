"""A run folder names its configuration: runs of other head options or probe settings live side by side (the
default configuration in the head's own folder), the report labels each, and the head's options come from its
declaration (heads.registry)."""

from __future__ import annotations

import re
import shutil

import torch
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.probe import ProbeConfig, run_probe
from pipeline.probe.protocol import run_folder
from pipeline.workspace import Workspace
from tests.pipeline.probe.conftest import make_workspace

runner = CliRunner()


NARROW = {"embed_dim": 16, "ffn_dim": 24}  # the demo's GLoRI is narrower than the paper's 768/2048
WIDER = {"embed_dim": 32}  # stands in for the paper's width (768 is slow on a CPU; the folder rule is the same)


def _cheap(**options) -> ProbeConfig:
    return ProbeConfig(lrs=(1e-2,), epochs=1, n_resamples=10, head_options=options)


def test_runs_of_other_head_configurations_live_side_by_side(tmp_path):
    """Issue 26 item 7: after `chex demo` (GLoRI 64/128 wide), `chex probe --head glori` (768/2048) refused with
    "holds a finished run of another configuration ... rerun with --force"; --force replaced the demo's run."""
    ws = make_workspace(tmp_path / "ws", n_patients=30)
    narrow = run_probe(ws, "toy", "glori", config=_cheap(**NARROW), progress=False)
    wide = run_probe(ws, "toy", "glori", config=_cheap(**WIDER), progress=False)  # failed here before
    assert narrow.folder != wide.folder and narrow.folder.parent == wide.folder.parent
    assert narrow.folder.name.startswith("glori@dim16-ffn24-") and wide.folder.name.startswith("glori@dim32-lrs1-")
    assert torch.load(narrow.folder / "head.pt", weights_only=True)["embed.weight"].shape[0] == 16
    assert torch.load(wide.folder / "head.pt", weights_only=True)["embed.weight"].shape[0] == 32
    assert run_probe(ws, "toy", "glori", config=_cheap(**NARROW), progress=False).skipped  # each stays done
    assert run_probe(ws, "toy", "glori", config=_cheap(**WIDER), progress=False).skipped
    forced = run_probe(ws, "toy", "glori", config=_cheap(**NARROW), force=True, progress=False)
    assert forced.folder == narrow.folder and not forced.skipped  # --force: the same configuration only
    assert (wide.folder / "run.json").is_file()


def test_the_default_configuration_keeps_the_head_folder(tmp_path):
    ws = Workspace(tmp_path / "ws")
    assert run_folder(ws, "plco", "demo-dino", "glori", ProbeConfig()).root == ws.results_dir("plco", "demo-dino",
                                                                                              "glori")  # fmt: skip
    given = ProbeConfig(head_options={"embed_dim": 768})  # the default, given explicitly
    assert run_folder(ws, "plco", "demo-dino", "glori", given).root == ws.results_dir("plco", "demo-dino", "glori")
    tagged = run_folder(ws, "plco", "demo-dino", "glori", ProbeConfig(seed=1, head_options=NARROW)).root
    assert re.fullmatch(r"glori@dim16-ffn24-seed1-[0-9a-f]{6}", tagged.name)
    outputs = ProbeConfig(seed=1, head_options=NARROW, n_resamples=200, save_attention=4)  # output settings only
    assert run_folder(ws, "plco", "demo-dino", "glori", outputs).root == tagged
    fraction = run_folder(ws, "plco", "demo-dino", "glori", ProbeConfig(label_fraction=0.1, head_options=NARROW))
    assert fraction.root.name == "label_fraction=0.1" and fraction.root.parent.name.startswith("glori@dim16-ffn24-")


def test_a_run_left_in_the_head_folder_by_an_older_chex_moves_into_its_own(tmp_path):
    ws = make_workspace(tmp_path / "ws", n_patients=30)
    narrow = run_probe(ws, "toy", "glori", config=_cheap(**NARROW), progress=False)
    legacy = ws.results_dir("toy", "toy-vit", "glori")  # where every GLoRI run lived before
    shutil.move(narrow.folder, legacy)
    assert run_probe(ws, "toy", "glori", config=_cheap(**NARROW), progress=False).skipped  # moved, not rerun
    assert (narrow.folder / "run.json").is_file() and not (legacy / "run.json").is_file()
    assert torch.load(narrow.folder / "head.pt", weights_only=True)["embed.weight"].shape[0] == 16


def test_probe_flags_come_from_the_head_declarations(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    args = ["probe", "--head", "mlp", "--dataset", "toy", "--epochs", "1", "--lrs", "1e-3", "--resamples", "10",
            "--mlp-hidden", "12", "-w", str(ws.root)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    folder = next(ws.results_dir("toy", "toy-vit", "mlp").parent.glob("mlp@hidden12-*"))  # a non-default width
    state = torch.load(folder / "head.pt", weights_only=True)
    assert tuple(state["fc1.weight"].shape) == (12, 2 * 16)
    bad = runner.invoke(app, [*args[:-4], "--mlp-dropout", "1.5", "-w", str(ws.root)])
    assert bad.exit_code == 2 and "--mlp-dropout 1.5" in bad.output
