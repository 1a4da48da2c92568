"""RAD-DINO: a transformers Dinov2Model folder (config.json + model.safetensors + preprocessor_config.json), built
by transformers itself, embedded by chex: stored tokens = the library's last-4 hidden states through `layernorm`
after its own BitImageProcessor, at the folder's size and at a second resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.embed import EmbedOptions, embed_dataset
from tests.pipeline.backbone.families_helpers import images, processed, square_workspace, stored_tokens

transformers = pytest.importorskip("transformers")
MEAN, STD = [0.53, 0.52, 0.51], [0.26, 0.25, 0.24]


def _release_folder(path):
    torch.manual_seed(0)
    cfg = transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, image_size=32, patch_size=8, layerscale_value=0.5
    )
    model = transformers.Dinov2Model(cfg).eval()
    with torch.no_grad():  # random layer scales and position table, so their conversion is exercised
        for name, p in model.named_parameters():
            if "lambda1" in name or "position_embeddings" in name or "cls_token" in name:
                p.copy_(torch.randn_like(p))
    model.save_pretrained(path)
    processor = transformers.BitImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=MEAN, image_std=STD
    )
    processor.save_pretrained(path)
    return model, processor


def _reference(model, processor, pil_images, side):
    pixels = processed(processor, pil_images, side)
    with torch.no_grad():
        hidden = model(pixel_values=pixels, output_hidden_states=True).hidden_states[-4:]
        normed = torch.stack([model.layernorm(h) for h in hidden], dim=1)  # (B, 4, 1+P, D)
    return normed[:, :, 0].numpy(), normed[:, :, 1:].numpy()


def test_rad_dino_folder_embeds_as_transformers_computes_it(tmp_path):
    folder = tmp_path / "rad-dino"
    model, processor = _release_folder(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    ws = square_workspace(tmp_path / "ws", {"sq32": 32, "sq48": 48})
    for dataset, side, size in (("sq32", 32, None), ("sq48", 48, 48)):
        name = f"rad-{side}"
        embed_dataset(ws, dataset, folder, name, image_size=size, options=EmbedOptions(workers=0, progress=False))
        ids, parts, attrs = stored_tokens(ws.features_dir(name))
        pil = images(ws, dataset)
        want_cls, want_patch = _reference(model, processor, [pil[i] for i in ids], side)
        np.testing.assert_allclose(parts["cls"], want_cls, atol=4e-3, rtol=4e-3)
        np.testing.assert_allclose(parts["patch"], want_patch, atol=4e-3, rtol=4e-3)
        assert "registers" not in parts
        assert attrs["family"] == "rad-dino" and attrs["patch_grid"] == [side // 8, side // 8]
        assert attrs["preprocessing"]["interpolation"] == "bicubic+antialias"
        assert attrs["preprocessing"]["mean"] == pytest.approx(MEAN)
