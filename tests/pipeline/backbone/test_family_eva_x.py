"""EVA-X: tiny random-init models built by a transcription of EVA-X's own model code (eva_x_reference.py), saved in
the release layout (`{'model': state_dict}` plus a numpy scalar, as eva_x_*_merged520k_mim.pt), embedded through
`chex embed --checkpoint`: stored tokens = EVA-X's forward after EVA-X's eval transform, for the Ti/S layout (fused
qkv, packed SwiGLU) and the B layout (q/k/v_proj, SwiGLU + ffn_ln), at the pretraining size and a second one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor
from typer.testing import CliRunner

from pipeline.backbone.registry import open_backbone
from pipeline.cli import app
from pipeline.errors import CheckpointError
from tests.pipeline.backbone.eva_x_reference import EvaXMIM, at_input_size
from tests.pipeline.backbone.families_helpers import images, square_workspace, stored_tokens

MEAN, STD = 0.49185243, 0.28509309
DIM, DEPTH, HEADS, PATCH = 32, 4, 2, 8


def release_file(path, subln: bool, seed: int = 0) -> EvaXMIM:
    """A tiny EVA-X MIM model (32 px, 4x4 grid) with every parameter random, saved as EVA-X releases it."""
    torch.manual_seed(seed)
    model = EvaXMIM(32, PATCH, DIM, DEPTH, HEADS, subln).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.3 if ("norm" in name or "ffn_ln" in name or "bias" in name or "token" in name) else 0.2
            base = 1.0 if name.endswith(("norm1.weight", "norm2.weight", "norm.weight", "ffn_ln.weight")) else 0.0
            p.copy_(base + torch.randn_like(p) * scale)
    torch.save({"model": model.state_dict(), "acc": np.float64(0.8123)}, path)
    return model


def _eva_x_transform(size: int, side: int):
    """EVA-X classification/utils/datasets.py build_transform(is_train=False): Resize(int(size / crop_pct), bicubic),
    CenterCrop, ToTensor, Normalize; ToTensor first, so the resize runs on float pixels (as chex's does) rather
    than rounding PIL's output to uint8."""
    crop_pct = 224 / 256 if size <= 224 else 1.0
    return Compose([
        ToTensor(), Resize(int(size / crop_pct), InterpolationMode.BICUBIC, antialias=True), CenterCrop(size),
        Normalize((MEAN,) * 3, (STD,) * 3),
    ])  # fmt: skip


def _reference(model, pil_images, size, side, subln):
    transform = _eva_x_transform(size, side)
    x = torch.stack([transform(im.convert("RGB")) for im in pil_images])
    if size != 32:
        model = at_input_size(model, size, DIM, DEPTH, HEADS, subln)
    with torch.no_grad():
        pooled, patch = model.tokens(x, 4)
    return pooled.numpy(), patch.numpy()


@pytest.mark.parametrize("subln", [False, True], ids=["ti-s-layout", "b-layout"])
def test_eva_x_release_file_embeds_as_eva_x_computes_it(tmp_path, subln):
    name = "eva_x_base_patch16_merged520k_mim.pt" if subln else "eva_x_small_patch16_merged520k_mim.pt"
    checkpoint = tmp_path / name
    model = release_file(checkpoint, subln)
    keys = model.state_dict()
    assert ("blocks.0.attn.q_proj.weight" in keys) == subln and ("blocks.0.mlp.w12.weight" in keys) != subln
    # 36 px -> int(32 / 0.875) = 36: the resize is the identity and the crop is EVA-X's; 64 px -> 54 -> crop 48
    ws = square_workspace(tmp_path / "ws", {"sq36": 36, "sq64": 64})
    runner = CliRunner()
    for dataset, side, size in (("sq36", 36, 32), ("sq64", 64, 48)):
        store = f"evax-{size}"
        args = ["embed", dataset, "-w", str(ws.root), "--checkpoint", str(checkpoint), "--backbone", store,
                "--workers", "0", "--no-progress"] + (["--image-size", str(size)] if size != 32 else [])  # fmt: skip
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        ids, parts, attrs = stored_tokens(ws.features_dir(store))
        pil = images(ws, dataset)
        want_pooled, want_patch = _reference(model, [pil[i] for i in ids], size, side, subln)
        np.testing.assert_allclose(parts["cls"], want_pooled, atol=5e-3, rtol=5e-3)
        np.testing.assert_allclose(parts["patch"], want_patch, atol=5e-3, rtol=5e-3)
        assert "registers" not in parts or parts["registers"].shape[2] == 0
        assert attrs["family"] == "eva-x" and attrs["patch_grid"] == [size // PATCH] * 2
        prep = attrs["preprocessing"]
        assert prep["mean"] == pytest.approx([MEAN] * 3) and prep["std"] == pytest.approx([STD] * 3)
        assert prep["interpolation"] == "bicubic+antialias" and prep["resize_to"] == int(size / 0.875)


def test_eva_x_is_recognised_and_its_heads_come_from_the_rope_table(tmp_path):
    release_file(tmp_path / "eva.pt", subln=False)
    backbone = open_backbone(tmp_path / "eva.pt")  # no --num-heads: width 32 / 64 would give 1 head
    assert backbone.family == "eva-x" and backbone.model.blocks[0].attn.num_heads == HEADS
    assert backbone.grid == (4, 4) and backbone.dim == DIM and backbone.depth == DEPTH
    result = CliRunner().invoke(app, ["backbones", str(tmp_path / "eva.pt")], env={"COLUMNS": "300"})
    assert result.exit_code == 0 and "family eva-x" in result.output
    listed = CliRunner().invoke(app, ["backbones"], env={"COLUMNS": "250"}).output  # the eva-x row's files, transform
    assert "eva-x" in listed and "merged520k_mim.pt" in listed and "q_bias" in listed and "0.49185243" in listed


def test_eva_x_rope_table_that_does_not_match_is_refused(tmp_path):
    model = release_file(tmp_path / "eva.pt", subln=False)
    sd = model.state_dict()
    sd["rope.freqs_cos"] = sd["rope.freqs_cos"].flip(0)
    torch.save({"model": sd}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"rope\.freqs_cos .* not EVA-02's 2-D RoPE"):
        open_backbone(tmp_path / "bad.pt")


def test_eva_x_unknown_keys_are_listed_not_ignored(tmp_path):
    model = release_file(tmp_path / "eva.pt", subln=True)
    sd = model.state_dict()
    sd["blocks.0.attn.relative_position_bias_table"] = torch.zeros(3, 2)
    torch.save({"model": sd}, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match=r"unknown keys \(1\): blocks\.0\.attn\.relative_position_bias_table"):
        open_backbone(tmp_path / "extra.pt")


def test_eva_x_fine_tune_layout_reads_fc_norm_as_the_final_norm(tmp_path):
    """An EVA-X classification fine-tune (models_eva.py with --use_mean_pooling: norm is Identity, `fc_norm` pools,
    `head` classifies; no mask_token / lm_head) gives the tokens of the same weights in the MIM layout."""
    model = release_file(tmp_path / "mim.pt", subln=False)
    sd = {k: v for k, v in model.state_dict().items() if k != "mask_token" and not k.startswith("lm_head.")}
    sd = {k.replace("norm.", "fc_norm.") if k.startswith("norm.") else k: v for k, v in sd.items()}
    sd |= {"head.weight": torch.randn(14, DIM), "head.bias": torch.zeros(14)}
    torch.save({"model": sd}, tmp_path / "finetuned.pth")
    x = torch.randn(2, 3, 32, 32)
    mim, tuned = open_backbone(tmp_path / "mim.pt"), open_backbone(tmp_path / "finetuned.pth")
    with torch.no_grad():
        for a, b in zip(mim.tokens(x, 2), tuned.tokens(x, 2), strict=True):
            torch.testing.assert_close(a, b)
        pooled, _ = model.tokens(x, 1)  # models_eva.py forward_features: fc_norm(mean of the patch tokens)
    torch.testing.assert_close(tuned.tokens(x, 1)[0], pooled, atol=1e-5, rtol=1e-5)
