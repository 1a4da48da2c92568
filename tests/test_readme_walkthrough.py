"""The README's "Bringing a real data set" walk-through, run exactly as written (tiny images, tiny backbone).

Only three things are substituted: the image folder, the checkpoint and the workspace become temporary paths.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
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


def _images(root: Path) -> None:
    rng = np.random.default_rng(0)
    for label in ("NORMAL", "PNEUMONIA"):
        (root / label).mkdir(parents=True)
        for i in range(16):
            pixels = rng.integers(0, 120, (40, 36), dtype=np.uint8)
            if label == "PNEUMONIA":
                pixels[8:28, 6:26] += 120  # something to find
            Image.fromarray(pixels).save(root / label / f"person{i}_{label.lower()}_{i}.jpeg")


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
    assert (workspace / "results" / "peds" / "chexfound" / "linear" / "results.parquet").is_file()
    index = (workspace / "reports" / "index.md").read_text()
    assert "peds" in index
