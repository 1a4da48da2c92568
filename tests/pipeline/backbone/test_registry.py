"""The family registry: recognition by folder config or tell-tale keys, clear words for what it does not know,
a foreign config.json never read as chex's own, and no torch import to list or recognise folder families."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import timm
import torch

from pipeline.backbone.registry import all_families, open_backbone
from pipeline.errors import CheckpointError


def test_every_family_says_what_it_expects_and_how_it_preprocesses():
    fams = all_families()
    names = [f.name for f in fams]
    known = {"chex", "dinov2", "mae", "timm-vit", "rad-dino", "eva-x", "convnext", "chexzero", "pubmedclip"}
    assert known <= set(names)
    assert len(set(names)) == len(names)
    for f in fams:
        assert f.summary and f.expects and f.preprocessing and f.follows


def _swin_folder(path):
    """A transformers SwinModel release folder (a family chex does not load)."""
    from safetensors.torch import save_file

    path.mkdir()
    (path / "config.json").write_text(json.dumps({"architectures": ["SwinModel"], "model_type": "swin"}))
    save_file({"embeddings.patch_embeddings.projection.weight": torch.zeros(4, 3, 4, 4)}, path / "model.safetensors")
    return path


def test_unrecognised_folder_is_named_with_the_known_families(tmp_path):
    _swin_folder(tmp_path / "swin")
    with pytest.raises(CheckpointError, match="a transformers SwinModel folder") as err:
        open_backbone(tmp_path / "swin")
    assert "rad-dino" in str(err.value) and "chex backbones" in str(err.value)


def test_unrecognised_state_dict_is_described_by_its_key_prefixes(tmp_path):
    state = {"visual.trunk.blocks.0.w": torch.zeros(2), "visual.head.proj.weight": torch.zeros(2)}
    torch.save(state, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match=r"a state dict with keys visual\.trunk\.\*"):
        open_backbone(tmp_path / "x.pt")


def test_foreign_config_json_beside_a_weights_file_is_not_read_as_chex_config(tmp_path):
    src = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2
    )
    torch.save(src.state_dict(), tmp_path / "vit.pth")
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "vit_tiny_patch16_224", "num_classes": 1000}))
    backbone = open_backbone(tmp_path / "vit.pth", num_heads=2)
    assert backbone.family == "timm-vit" and backbone.grid == (4, 4)


def test_listing_families_and_recognising_folders_import_no_torch(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "dinov2", "architectures": ["Dinov2Model"]}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    code = (
        "import sys; from pipeline.backbone.registry import all_families, recognise; "
        "from pipeline.backbone.found import inspect_path; "
        f"f = recognise(inspect_path({str(tmp_path)!r})); assert f.name == 'rad-dino', f; "
        "assert len(all_families()) >= 5; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_lists_families_and_refuses_a_foreign_folder_before_loading_it(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["backbones"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and "rad-dino" in listed.output and "preprocessor_config.json" in listed.output
    folder = _swin_folder(tmp_path / "swin")
    refused = runner.invoke(app, ["embed", "--checkpoint", str(folder), "-w", str(tmp_path / "ws")])
    assert refused.exit_code == 2 and "a transformers SwinModel folder" in refused.output
    assert "Traceback" not in refused.output


def test_numpy_scalars_beside_the_weights_load_and_code_is_still_refused(tmp_path):
    import numpy as np

    from pipeline.backbone.weights import read_weights

    # EVA-X's .pt files keep a numpy scalar next to {'model': ...}
    torch.save({"model": {"w": torch.ones(2)}, "acc": np.float64(0.5), "step": np.int64(3)}, tmp_path / "eva.pt")
    assert set(read_weights(tmp_path / "eva.pt")) == {"w"}
    torch.save({"model": {"w": torch.ones(2)}, "cls": CheckpointError("x")}, tmp_path / "code.pt")
    with pytest.raises(CheckpointError, match="pickled code") as err:
        read_weights(tmp_path / "code.pt")
    assert "\x1b" not in str(err.value)  # no terminal colour codes from torch's message


def test_eva_x_keys_are_not_taken_for_dinov2_or_timm(tmp_path):
    """EVA-X Ti/S .pt: mask_token + fused qkv + q_bias/v_bias + rope: the eva-x family's, not a DINOv2 or timm ViT
    (issue 23); a file with too few of its keys is refused listing what is missing."""
    from pipeline.backbone.found import inspect_path
    from pipeline.backbone.registry import recognise

    state = {
        "cls_token": torch.zeros(1, 1, 8), "mask_token": torch.zeros(1, 1, 8), "pos_embed": torch.zeros(1, 5, 8),
        "patch_embed.proj.weight": torch.zeros(8, 3, 16, 16), "blocks.0.attn.qkv.weight": torch.zeros(24, 8),
        "blocks.0.attn.q_bias": torch.zeros(8), "blocks.0.attn.v_bias": torch.zeros(8),
        "blocks.0.mlp.w12.weight": torch.zeros(8, 8), "blocks.0.mlp.w3.weight": torch.zeros(8, 4),
    }  # fmt: skip
    torch.save({"model": state}, tmp_path / "eva_x_tiny_patch16_merged520k_mim.pt")
    assert recognise(inspect_path(tmp_path / "eva_x_tiny_patch16_merged520k_mim.pt")).name == "eva-x"
    with pytest.raises(CheckpointError, match=r"missing keys .*blocks\.0\.norm1\.weight") as err:
        open_backbone(tmp_path / "eva_x_tiny_patch16_merged520k_mim.pt")
    assert "dinov2 layout" not in str(err.value)
