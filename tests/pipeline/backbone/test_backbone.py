"""Backbones: build, tokens, chex checkpoints and converted foreign checkpoints reproduce the source model."""

from __future__ import annotations

import json

import pytest
import timm
import torch

from pipeline.backbone import BackboneConfig, build_backbone, last_layer_tokens, load_backbone, preset, save_checkpoint
from pipeline.backbone.converters import detect_layout
from pipeline.errors import CheckpointError, ConfigError
from tests.pipeline.backbone.reference_models import DinoVisionTransformer, MaskedAutoencoderViT

torch.manual_seed(0)
X = torch.randn(2, 3, 32, 32)


def _split(tokens: list[torch.Tensor], n_reg: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    t = torch.stack(tokens, dim=1)
    return t[:, :, 0], t[:, :, 1 + n_reg :], t[:, :, 1 : 1 + n_reg]


def _assert_tokens_match(model, ref, n_reg: int, n: int = 4) -> None:
    with torch.inference_mode():
        got = last_layer_tokens(model, X, n)
        want = _split(ref.get_intermediate_layers(X, n), n_reg)
    for g, w, name in zip(got, want, ("cls", "patch", "registers"), strict=True):
        assert g.shape == w.shape, name
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5, msg=name)


def test_last_layer_tokens_shapes_and_norm_match_forward_intermediates():
    cfg = BackboneConfig(embed_dim=32, depth=3, num_heads=2, patch_size=8, img_size=32, num_registers=2)
    model = build_backbone(cfg).eval()
    cls, patch, reg = last_layer_tokens(model, X, n_layers=2)
    assert cls.shape == (2, 2, 32) and patch.shape == (2, 2, 16, 32) and reg.shape == (2, 2, 2, 32)
    # the last layer's normed tokens are the model's final features
    feats = model.forward_features(X)
    torch.testing.assert_close(cls[:, -1], feats[:, 0])
    torch.testing.assert_close(patch[:, -1], feats[:, 3:])
    torch.testing.assert_close(reg[:, -1], feats[:, 1:3])


def test_chex_checkpoint_round_trip(tmp_path):
    cfg = preset("vit_small_patch16_reg4_swiglu", embed_dim=64, num_heads=2, depth=2, img_size=32, patch_size=8)
    model = build_backbone(cfg).eval()
    save_checkpoint(model, cfg, tmp_path / "ck")
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["ffn"] == "swiglufused"
    loaded, cfg2, sha = load_backbone(tmp_path / "ck")
    assert cfg2 == cfg and len(sha) == 64
    a, b = last_layer_tokens(model, X, 2), last_layer_tokens(loaded, X, 2)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    # no sidecar config: the architecture is inferred from shapes and equals the saved one
    (tmp_path / "bare").mkdir()
    (tmp_path / "ck" / "model.pt").rename(tmp_path / "bare" / "weights.pth")
    _, cfg3, sha3 = load_backbone(tmp_path / "bare" / "weights.pth", num_heads=2)
    assert cfg3 == cfg and sha3 == sha


@pytest.mark.parametrize("chunks", [1, 2])
@pytest.mark.parametrize("n_reg,swiglu,layer_scale", [(4, True, True), (0, False, False), (0, True, True)])
def test_dinov2_teacher_checkpoint_reproduces_source(tmp_path, chunks, n_reg, swiglu, layer_scale):
    ref = DinoVisionTransformer(n_reg=n_reg, swiglu=swiglu, layer_scale=layer_scale, chunks=chunks).eval()
    sd = ref.state_dict()
    # a DINOv2 training checkpoint: student + teacher + heads + optimizer, teacher weights are the ones to take
    model_sd = {f"teacher.backbone.{k}": v for k, v in sd.items()}
    model_sd |= {f"student.backbone.{k}": torch.zeros_like(v) for k, v in sd.items()}
    model_sd["teacher.dino_head.mlp.0.weight"] = torch.randn(8, 64)
    torch.save({"model": model_sd, "optimizer": {"state": {}}, "iteration": 7}, tmp_path / "model_0000007.pth")
    model, cfg, _ = load_backbone(tmp_path / "model_0000007.pth")
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.patch_size, cfg.img_size) == (64, 4, 1, 8, 32)
    assert cfg.num_registers == n_reg and cfg.ffn == ("swiglufused" if swiglu else "mlp")
    assert (cfg.layer_scale is not None) == layer_scale
    model, cfg, _ = load_backbone(tmp_path / "model_0000007.pth", num_heads=2)
    _assert_tokens_match(model, ref, n_reg)
    # CheXFound's eval teacher_checkpoint.pth: {"teacher": {"backbone.*": ...}}
    torch.save({"teacher": {f"backbone.{k}": v for k, v in sd.items()}}, tmp_path / "teacher_checkpoint.pth")
    model2, cfg2, _ = load_backbone(tmp_path / "teacher_checkpoint.pth", num_heads=2)
    assert cfg2 == cfg
    _assert_tokens_match(model2, ref, n_reg, n=2)


def test_mae_checkpoint_reproduces_encoder(tmp_path):
    ref = MaskedAutoencoderViT().eval()
    torch.save({"model": ref.state_dict(), "epoch": 3}, tmp_path / "mae.pth")
    assert detect_layout(ref.state_dict()) == "mae"
    model, cfg, _ = load_backbone(tmp_path / "mae.pth", num_heads=2)
    assert cfg.ffn == "mlp" and cfg.num_registers == 0 and cfg.layer_scale is None
    _assert_tokens_match(model, ref, 0)


def test_timm_state_dict_reproduces_timm_model(tmp_path):
    src = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        embed_dim=64,
        depth=3,
        num_heads=2,
        reg_tokens=2,
        num_classes=5,
    ).eval()
    torch.save(src.state_dict(), tmp_path / "timm.pth")  # pos_embed covers the cls + reg tokens, has a head
    model, cfg, _ = load_backbone(tmp_path / "timm.pth", num_heads=2)
    assert cfg.num_registers == 2
    with torch.inference_mode():
        got = last_layer_tokens(model, X, 3)
        out = src.forward_intermediates(
            X, indices=3, norm=True, output_fmt="NLC", return_prefix_tokens=True, intermediates_only=True
        )
    torch.testing.assert_close(got[1], torch.stack([s for s, _ in out], 1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[0], torch.stack([p[:, 0] for _, p in out], 1), atol=1e-5, rtol=1e-5)


def test_image_size_interpolates_position_embeddings(tmp_path):
    cfg = BackboneConfig(embed_dim=32, depth=2, num_heads=2, patch_size=8, img_size=32)
    save_checkpoint(build_backbone(cfg), cfg, tmp_path / "ck")
    model, cfg2, _ = load_backbone(tmp_path / "ck", image_size=48)
    assert cfg2.img_size == 48 and model.pos_embed.shape == (1, 36, 32)
    assert last_layer_tokens(model, torch.randn(1, 3, 48, 48), 1)[1].shape == (1, 1, 36, 32)


def test_pickled_code_is_refused(tmp_path):
    torch.save({"model": {"w": torch.zeros(1)}, "cfg": BackboneConfig()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="pickled code"):
        load_backbone(tmp_path / "evil.pth")


def test_unknown_and_missing_keys_are_listed(tmp_path):
    cfg = BackboneConfig(embed_dim=32, depth=2, num_heads=2, patch_size=8, img_size=32)
    sd = build_backbone(cfg).state_dict()
    sd["blocks.0.extra.weight"] = torch.zeros(3)
    del sd["blocks.1.attn.proj.bias"]
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as err:
        load_backbone(tmp_path / "bad.pth", num_heads=2)
    assert "blocks.0.extra.weight" in str(err.value) and "blocks.1.attn.proj.bias" in str(err.value)


def test_config_validation_and_presets():
    with pytest.raises(ConfigError, match="divisible"):
        BackboneConfig(embed_dim=30, num_heads=4)
    with pytest.raises(ConfigError, match="preset"):
        preset("vit_nope")
    chexfound = preset("vit_large_patch16_chexfound")
    assert (chexfound.embed_dim, chexfound.num_registers, chexfound.img_size, chexfound.ffn_hidden) == (
        1024,
        4,
        512,
        2736,
    )
