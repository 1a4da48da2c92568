"""Any timm token model by name + its state dict (`--family timm:NAME`): built by timm, embedded by chex; stored
tokens = timm's own forward_intermediates(norm=True) after timm's resolved eval transform, at two resolutions."""

from __future__ import annotations

import numpy as np
import timm
import torch
from timm.data import create_transform, resolve_data_config
from timm.layers import resample_abs_pos_embed

from pipeline.embed import EmbedOptions, embed_dataset
from tests.pipeline.backbone.families_helpers import images, square_workspace, stored_tokens

NAME = "vit_small_patch14_reg4_dinov2"  # timm: crop_pct 1.0, bicubic, ImageNet mean/std
SMALL = dict(embed_dim=32, depth=4, num_heads=2, patch_size=8)


def _stack(out, part):
    return torch.stack([o[part] if part == 0 else o[1][:, 0] if part == "cls" else o[1][:, 1:] for o in out], 1)


def test_timm_model_by_name_embeds_as_timm_computes_it(tmp_path, monkeypatch):
    torch.manual_seed(0)
    src = timm.create_model(NAME, pretrained=False, num_classes=3, img_size=32, **SMALL).eval()
    torch.save(src.state_dict(), tmp_path / "weights.pth")
    real_create = timm.create_model  # chex builds the named model; here shrunk through timm's own kwargs
    monkeypatch.setattr(timm, "create_model", lambda name, **kw: real_create(name, **{**SMALL, **kw}))
    ws = square_workspace(tmp_path / "ws", {"sq32": 32, "sq48": 48})
    for dataset, side in (("sq32", 32), ("sq48", 48)):
        name = f"timm-{side}"
        opts = EmbedOptions(workers=0, progress=False)
        embed_dataset(ws, dataset, tmp_path / "weights.pth", name, image_size=side, family=f"timm:{NAME}", options=opts)
        ids, parts, attrs = stored_tokens(ws.features_dir(name))
        ref = real_create(NAME, pretrained=False, num_classes=3, img_size=side, **SMALL).eval()
        sd = dict(src.state_dict())
        grid = side // 8
        sd["pos_embed"] = resample_abs_pos_embed(
            sd["pos_embed"], [grid, grid], (4, 4), num_prefix_tokens=0, antialias=False
        )
        ref.load_state_dict(sd)
        transform = create_transform(**resolve_data_config({"input_size": (3, side, side)}, model=ref))
        pil = images(ws, dataset)
        x = torch.stack([transform(pil[i].convert("RGB")) for i in ids])
        with torch.no_grad():
            out = ref.forward_intermediates(
                x, indices=4, norm=True, output_fmt="NLC", return_prefix_tokens=True, intermediates_only=True
            )
        for part in ("patch", "cls", "registers"):
            want = _stack(out, 0 if part == "patch" else part).numpy()
            np.testing.assert_allclose(parts[part], want, atol=5e-3, rtol=5e-3, err_msg=part)
        assert attrs["family"] == f"timm:{NAME}" and attrs["patch_grid"] == [grid, grid]
