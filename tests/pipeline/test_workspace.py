from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.workspace import Workspace


@pytest.mark.parametrize("bad", ["../../X", "a/b", "..", ".hidden", "", "a..b", "x" * 200])
def test_check_name_refuses_names_that_escape(bad):
    from pipeline.errors import ConfigError
    from pipeline.workspace import check_name

    with pytest.raises(ConfigError, match="not allowed"):
        check_name(bad, "backbone")


def test_check_name_accepts_ordinary_names():
    from pipeline.workspace import check_name

    for good in ["demo-dino", "chexfound", "label_fraction=0.1", "vit_b16.v2"]:
        assert check_name(good, "backbone") == good


def test_out_folder_names_paths_and_leftovers(tmp_path):
    from pipeline.workspace import out_folder

    ws = Workspace(tmp_path / "ws")
    args = ("features", "feature store", ("zarr.json",))
    assert out_folder(ws, Path("r8"), *args) == ws.root / "features" / "r8"
    assert out_folder(ws, ws.root / "features" / "r8", *args) == ws.root / "features" / "r8"
    for bad in (Path(".."), ws.root / "..", ws.root / "results", ws.root / "features" / "a" / "b", ws.root):
        with pytest.raises(ConfigError):
            out_folder(ws, bad, *args)
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / ".zarr.json.123.chex-tmp").write_text("{}")  # a killed writer's temporary: still a new folder
    assert out_folder(ws, killed, *args) == killed
    (killed / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is not a feature store"):
        out_folder(ws, killed, *args)
    (killed / "zarr.json").write_text("{}")  # already a store: resumed or extended
    assert out_folder(ws, killed, *args) == killed


def test_out_file_rules(tmp_path):
    from pipeline.workspace import out_file

    ws = Workspace(tmp_path / "ws")
    ws.manifests_dir.mkdir(parents=True)
    ws.manifest_path("a").write_text("x")
    with pytest.raises(ConfigError, match="workspace's own manifests"):
        out_file(ws, ws.manifest_path("a"), overwrite=True)
    with pytest.raises(ConfigError, match="exists; pass --overwrite"):
        out_file(ws, ws.manifest_path("a"), own=ws.manifest_path("a"))
    assert out_file(ws, ws.manifest_path("a"), overwrite=True, own=ws.manifest_path("a"))
    assert out_file(ws, ws.root / "exports" / "x.npz") == ws.root / "exports" / "x.npz"
    with pytest.raises(ConfigError, match="is a folder"):
        out_file(ws, tmp_path)
