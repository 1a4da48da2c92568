"""PubMedCLIP: a transformers CLIPModel folder (config.json + model.safetensors + preprocessor_config.json), built
by transformers, embedded by chex: stored tokens = the vision tower's last-4 hidden states through
`post_layernorm` after its own CLIPImageProcessor, at the folder's size and at a second resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.embed import EmbedOptions, embed_dataset
from tests.pipeline.backbone.families_helpers import images, processed, square_workspace, stored_tokens

transformers = pytest.importorskip("transformers")


def _release_folder(path):
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2, image_size=32,
            patch_size=8,
        ),
        projection_dim=8,
    )  # fmt: skip
    model = transformers.CLIPModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.vision_model.named_parameters():
            if "layrnorm" in name or "layernorm" in name or "embedding" in name:
                p.add_(torch.randn_like(p) * 0.3)
    model.save_pretrained(path)
    processor = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(path)
    return model, processor


def _reference(model, processor, pil_images, side):
    pixels = processed(processor, pil_images, side)
    vision = model.vision_model
    with torch.no_grad():
        out = vision(pixel_values=pixels, output_hidden_states=True, interpolate_pos_encoding=side != 32)
        normed = torch.stack([vision.post_layernorm(h) for h in out.hidden_states[-4:]], dim=1)
    return normed[:, :, 0].numpy(), normed[:, :, 1:].numpy()


def test_pubmedclip_folder_embeds_as_transformers_computes_it(tmp_path):
    folder = tmp_path / "pubmed-clip"
    model, processor = _release_folder(folder)
    ws = square_workspace(tmp_path / "ws", {"sq32": 32, "sq48": 48})
    for dataset, side, size in (("sq32", 32, None), ("sq48", 48, 48)):
        name = f"pubmedclip-{side}"
        embed_dataset(ws, dataset, folder, name, image_size=size, options=EmbedOptions(workers=0, progress=False))
        ids, parts, attrs = stored_tokens(ws.features_dir(name))
        pil = images(ws, dataset)
        want_cls, want_patch = _reference(model, processor, [pil[i] for i in ids], side)
        np.testing.assert_allclose(parts["cls"], want_cls, atol=5e-3, rtol=5e-3)
        np.testing.assert_allclose(parts["patch"], want_patch, atol=5e-3, rtol=5e-3)
        assert attrs["family"] == "pubmedclip" and attrs["patch_grid"] == [side // 8] * 2
        assert attrs["preprocessing"]["mean"] == pytest.approx(processor.image_mean)
