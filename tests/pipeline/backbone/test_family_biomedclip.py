"""BiomedCLIP: an open_clip hf-hub folder (open_clip_config.json + open_clip_pytorch_model.bin) whose image tower is
a timm ViT (`visual.trunk.*`), built by open_clip itself, embedded by chex: stored tokens = the trunk's last-4
blocks through its final norm after open_clip's own eval transform, at the native size and a second one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.embed import EmbedOptions, embed_dataset
from tests.pipeline.backbone.families_helpers import images, square_workspace, stored_tokens

open_clip = pytest.importorskip("open_clip")
MEAN, STD = (0.5, 0.45, 0.4), (0.25, 0.26, 0.27)


def _release_folder(path):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    vision = dict(timm_model_name="vit_tiny_patch16_224", timm_model_pretrained=False, timm_pool="", timm_proj="linear",
                  image_size=224)  # fmt: skip
    text = dict(context_length=16, vocab_size=100, width=32, heads=2, layers=1)
    model = CLIP(embed_dim=16, vision_cfg=CLIPVisionCfg(**vision), text_cfg=CLIPTextCfg(**text)).eval()
    model.visual.image_mean, model.visual.image_std = MEAN, STD
    path.mkdir()
    torch.save(model.state_dict(), path / "open_clip_pytorch_model.bin")
    from open_clip.push_to_hf_hub import save_config_for_hf

    save_config_for_hf(model, path / "open_clip_config.json", {"embed_dim": 16, "vision_cfg": vision, "text_cfg": text})
    assert json.loads((path / "open_clip_config.json").read_text())["preprocess_cfg"]["mean"] == list(MEAN)
    return model


def _reference(model, pil_images, side):
    from open_clip.transform import image_transform

    transform = image_transform(side, is_train=False, mean=MEAN, std=STD)
    x = torch.stack([transform(im.convert("RGB")) for im in pil_images])
    trunk = model.visual.trunk
    if side != 224:
        trunk.set_input_size(img_size=side)
    outs = []
    hooks = [b.register_forward_hook(lambda _m, _i, o: outs.append(o)) for b in trunk.blocks[-4:]]
    with torch.no_grad():
        trunk.forward_features(x)
        normed = torch.stack([trunk.norm(o) for o in outs], dim=1)
    for h in hooks:
        h.remove()
    return normed[:, :, 0].numpy(), normed[:, :, 1:].numpy()


def test_biomedclip_folder_embeds_as_open_clip_computes_it(tmp_path):
    folder = tmp_path / "BiomedCLIP"
    model = _release_folder(folder)
    ws = square_workspace(tmp_path / "ws", {"sq224": 224, "sq160": 160}, n=1)
    for dataset, side, size in (("sq224", 224, None), ("sq160", 160, 160)):
        name = f"biomedclip-{side}"
        embed_dataset(ws, dataset, folder, name, image_size=size, options=EmbedOptions(workers=0, progress=False))
        ids, parts, attrs = stored_tokens(ws.features_dir(name))
        pil = images(ws, dataset)
        want_cls, want_patch = _reference(model, [pil[i] for i in ids], side)
        np.testing.assert_allclose(parts["cls"], want_cls, atol=5e-3, rtol=5e-3)
        np.testing.assert_allclose(parts["patch"], want_patch, atol=5e-3, rtol=5e-3)
        assert attrs["family"] == "biomedclip" and attrs["patch_grid"] == [side // 16] * 2
        assert attrs["preprocessing"]["mean"] == pytest.approx(MEAN)
