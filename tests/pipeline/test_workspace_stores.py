"""The workspace's default backbone: which feature store a command uses when none is named (issue 16, item 0)."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import StoreError
from pipeline.probe import resolve_backbone
from pipeline.workspace_stores import note_new_store
from tests.pipeline.probe.conftest import make_workspace

runner = CliRunner()


@pytest.fixture
def two_stores(tmp_path):
    ws = make_workspace(tmp_path / "ws", n_patients=20)
    shutil.copytree(ws.features_dir("toy-vit"), ws.features_dir("random-init"))
    return ws


def test_several_stores_without_default_lists_them_and_says_how_to_choose(two_stores):
    with pytest.raises(StoreError) as err:
        resolve_backbone(two_stores, None)
    assert "random-init, toy-vit" in str(err.value)
    assert "chex workspace default-backbone" in str(err.value)


def test_the_default_backbone_is_used_when_none_is_named(two_stores):
    # the README's `chex probe --head glori --dataset plco` after `chex demo` (two stores) failed with exit 2
    two_stores.set_default_backbone("toy-vit")
    assert resolve_backbone(two_stores, None) == "toy-vit"
    assert resolve_backbone(two_stores, "random-init") == "random-init"  # a named store still wins


def test_first_store_becomes_the_default_and_later_ones_do_not(tmp_path):
    ws = make_workspace(tmp_path / "ws", n_patients=20)
    assert note_new_store(ws, "toy-vit") is True
    shutil.copytree(ws.features_dir("toy-vit"), ws.features_dir("second"))
    assert note_new_store(ws, "second") is False
    assert ws.default_backbone == "toy-vit"


def test_workspace_command_sets_and_shows_the_default(two_stores):
    args = ["--workspace", str(two_stores.root)]
    result = runner.invoke(app, ["workspace", "default-backbone", "random-init", *args])
    assert result.exit_code == 0, result.output
    assert resolve_backbone(two_stores, None) == "random-init"
    shown = runner.invoke(app, ["workspace", "show", *args])
    assert "random-init (default)" in shown.output
    bad = runner.invoke(app, ["workspace", "default-backbone", "nope", *args])
    assert bad.exit_code == 2 and "random-init, toy-vit" in bad.output


def test_probe_cli_uses_the_default_with_two_stores(two_stores):
    two_stores.set_default_backbone("toy-vit")
    result = runner.invoke(
        app, ["probe", "--head", "linear", "--dataset", "toy", "--lrs", "1e-3", "--epochs", "1", "--resamples", "10",
              "--quiet", "--workspace", str(two_stores.root)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (folder,) = two_stores.results_dir("toy", "toy-vit", "linear").parent.glob("linear@*")  # --epochs 1: not default
    assert (folder / "results.parquet").is_file()
