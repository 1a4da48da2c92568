"""The README's "Bringing a real data set" walk-through, run exactly as written (tiny images, tiny backbone).

Only three things are substituted: the image folder, the checkpoint and the workspace become temporary paths.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def walkthrough_commands() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Bringing a real data set") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def kermany_names() -> dict[str, list[str]]:
    """File names as in the Kermany et al. pediatric chest X-ray folders: normal studies `IM-<patient>-<image>`
    (a second batch prefixed `NORMAL2-`), pneumonia `person<patient>_<bacteria|virus>_<image>`."""
    normal = [f"IM-{115 + p:04d}-{k:04d}.jpeg" for p in range(6) for k in (1, 2)]
    normal += [f"NORMAL2-IM-{1427 + p:04d}-0001.jpeg" for p in range(4)]
    kinds = ("bacteria", "virus")
    pneumonia = [f"person{p}_{kinds[(p + k) % 2]}_{10 * p + k}.jpeg" for p in range(1, 9) for k in (1, 2)]
    return {"NORMAL": normal, "PNEUMONIA": pneumonia}


def _images(root: Path) -> None:
    rng = np.random.default_rng(0)
    for label, names in kermany_names().items():
        (root / label).mkdir(parents=True)
        for name in names:
            pixels = rng.integers(0, 120, (40, 36), dtype=np.uint8)
            if label == "PNEUMONIA":
                pixels[8:28, 6:26] += 120  # something to find
            Image.fromarray(pixels).save(root / label / name)
    # what unpacking the zip on a Mac leaves beside the images: none of it is a class or an image
    (root / "__MACOSX" / "NORMAL").mkdir(parents=True)
    (root / "__MACOSX" / "NORMAL" / "._IM-0115-0001.jpeg").write_bytes(b"\0\5\26\7 AppleDouble")
    (root / "NORMAL" / "._IM-0115-0002.jpeg").write_bytes(b"\0\5\26\7 AppleDouble")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")


def _checkpoint(path: Path) -> Path:
    import torch

    from pipeline.backbone import BackboneConfig, build_backbone, save_checkpoint

    torch.manual_seed(0)
    config = BackboneConfig(embed_dim=32, depth=4, num_heads=2, patch_size=8, img_size=32)
    return save_checkpoint(build_backbone(config), config, path)


@pytest.mark.slow
def test_readme_walkthrough_runs_as_written(tmp_path, monkeypatch):
    commands = walkthrough_commands()
    assert commands[0].startswith("export CHEX_WORKSPACE=") and commands[-1] == "chex report"
    _images(tmp_path / "images")
    checkpoint = _checkpoint(tmp_path / "ckpt")
    checkpoint = checkpoint if checkpoint.is_file() else checkpoint / "model.pt"
    monkeypatch.chdir(tmp_path)  # `--root images` is relative, as in the README
    runner = CliRunner()
    for command in commands:
        words = shlex.split(command)
        if words[0] == "export":
            name, _, value = words[1].partition("=")
            monkeypatch.setenv(name, str(tmp_path / value))
            continue
        assert words[0] == "chex", command
        args = [str(checkpoint) if w == "teacher_checkpoint.pth" else w for w in words[1:]]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, f"{command}\n{result.output}"
    workspace = tmp_path / "peds-workspace"
    manifest = pd.read_parquet(workspace / "manifests" / "peds.parquet").set_index("path")
    assert len(manifest) == 32 and "PNEUMONIA" in manifest.columns and "__MACOSX" not in manifest.columns
    patients = manifest["patient_id"]  # the README's --patient-regex fits every name of the real folders
    assert patients["NORMAL/IM-0115-0001.jpeg"] == patients["NORMAL/IM-0115-0002.jpeg"] == "IM-0115"
    assert patients["NORMAL/NORMAL2-IM-1427-0001.jpeg"] == "IM-1427"
    assert patients["PNEUMONIA/person1_bacteria_11.jpeg"] == patients["PNEUMONIA/person1_virus_12.jpeg"] == "person1"
    assert manifest.groupby("patient_id")["split"].nunique().max() == 1
    assert (workspace / "results" / "peds" / "chexfound" / "linear" / "results.parquet").is_file()
    index = (workspace / "reports" / "index.md").read_text()
    assert "peds" in index
