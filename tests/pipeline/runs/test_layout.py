"""The run folder names its configuration: `<head>/` for the defaults, `<head>@<tag>/` for any other."""

from __future__ import annotations

import re

from pipeline.runs import RunFolder, config_tag, head_folder, split_head_folder
from pipeline.runs.layout import TAG_READABLE
from pipeline.workspace import Workspace


def test_the_default_configuration_has_no_tag_and_others_a_readable_hashed_one():
    assert config_tag([], {"head": {"name": "glori"}}) == ""
    tag = config_tag([("dim", 64), ("ffn", 128), ("lrs", [1e-4, 1e-3, 5e-3]), ("views", False), ("wd", 1e-5)], {"a": 1})
    assert re.fullmatch(r"dim64-ffn128-lrs3-noviews-wd1e05-[0-9a-f]{6}", tag)
    assert config_tag([("dim", 64)], {"a": 1}) != config_tag([("dim", 64)], {"a": 2})  # the hash tells them apart
    long = config_tag([(f"option{k}", k) for k in range(20)], {"a": 1})
    assert len(long) <= TAG_READABLE + 7 and long.startswith("option00-option11-")
    assert re.fullmatch(r"[A-Za-z0-9.+-]+", config_tag([("sweep", "half/../ving")], {}))  # never a path


def test_tagged_folders_sit_beside_the_default_and_read_back(tmp_path):
    ws = Workspace(tmp_path)
    default = RunFolder.of(ws, "plco", "demo-dino", "glori", 1.0)
    tagged = RunFolder.of(ws, "plco", "demo-dino", "glori", 0.25, tag="dim64-abcdef")
    assert default.root == ws.results_dir("plco", "demo-dino", "glori")
    assert tagged.root == default.root.parent / "glori@dim64-abcdef" / "label_fraction=0.25"
    assert tagged.path_names() == {"dataset": "plco", "backbone": "demo-dino", "head": "glori",
                                   "label_fraction": "0.25", "config_tag": "dim64-abcdef"}  # fmt: skip
    assert split_head_folder(head_folder("glori", "dim64-abcdef")) == ("glori", "dim64-abcdef")
    assert split_head_folder("glori") == ("glori", "")
