"""CheXzero: an OpenAI-CLIP state dict (flat, mixed fp16/fp32, QuickGELU) built by open_clip's CLIP (the same
module layout as openai/CLIP), embedded by chex with CheXzero's preprocessing: stored tokens = the image
tower's last-4 block outputs through ln_post after CheXzero's transform, at two resolutions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import Compose, InterpolationMode, Normalize, Resize

from pipeline.embed import EmbedOptions, embed_dataset
from tests.pipeline.backbone.families_helpers import images, square_workspace, stored_tokens

open_clip = pytest.importorskip("open_clip")


def _openai_state_dict(path):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    model = CLIP(
        embed_dim=16,
        vision_cfg=CLIPVisionCfg(layers=4, width=32, head_width=16, patch_size=8, image_size=32),
        text_cfg=CLIPTextCfg(context_length=16, vocab_size=100, width=32, heads=2, layers=1),
        quick_gelu=True,
    ).eval()
    with torch.no_grad():
        for name, p in model.visual.named_parameters():
            if "ln_" in name or "embedding" in name:
                p.add_(torch.randn_like(p) * 0.3)
    # openai/CLIP convert_weights: matrices fp16, the rest fp32; the reference runs the same rounded weights in fp32
    sd = {k: (v.half() if v.ndim >= 2 and "embedding" not in k else v) for k, v in model.state_dict().items()}
    torch.save(sd, path)
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    return model


def _reference(model, pil_images, side):
    transform = Compose([Normalize((101.48761,) * 3, (83.43944,) * 3), Resize(side, InterpolationMode.BICUBIC)])
    x = torch.stack(
        [transform(torch.from_numpy(np.asarray(im, dtype=np.float32)).expand(3, -1, -1)) for im in pil_images]
    )
    visual = model.visual
    outs = []
    hooks = [b.register_forward_hook(lambda _m, _i, o: outs.append(o)) for b in visual.transformer.resblocks[-4:]]
    if side != 32:
        visual.positional_embedding.data = _resampled(visual.positional_embedding.data, side // 8)
    with torch.no_grad():
        visual(x)
        normed = torch.stack([visual.ln_post(o) for o in outs], dim=1)
    for h in hooks:
        h.remove()
    return normed[:, :, 0].numpy(), normed[:, :, 1:].numpy()


def _resampled(pos, grid):
    """open_clip's resize_pos_embed rule for another input size: bicubic over the patch positions, CLS kept."""
    cls, patches = pos[:1], pos[1:]
    old = int(patches.shape[0] ** 0.5)
    patches = patches.reshape(1, old, old, -1).permute(0, 3, 1, 2)
    patches = torch.nn.functional.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([cls, patches.permute(0, 2, 3, 1).reshape(grid * grid, -1)])


def test_chexzero_state_dict_embeds_as_clip_computes_it(tmp_path):
    model = _openai_state_dict(tmp_path / "best_64_5e-05_original_22000_0.864.pt")
    ws = square_workspace(tmp_path / "ws", {"sq32": 32, "sq48": 48})
    for dataset, side, size in (("sq32", 32, None), ("sq48", 48, 48)):
        name = f"chexzero-{side}"
        opts = EmbedOptions(workers=0, progress=False)
        ck = tmp_path / "best_64_5e-05_original_22000_0.864.pt"
        embed_dataset(ws, dataset, ck, name, image_size=size, num_heads=2, options=opts)
        ids, parts, attrs = stored_tokens(ws.features_dir(name))
        pil = images(ws, dataset)
        want_cls, want_patch = _reference(model, [pil[i] for i in ids], side)
        np.testing.assert_allclose(parts["cls"], want_cls, atol=5e-3, rtol=5e-3)
        np.testing.assert_allclose(parts["patch"], want_patch, atol=5e-3, rtol=5e-3)
        assert attrs["family"] == "chexzero" and attrs["patch_grid"] == [side // 8] * 2
        assert attrs["preprocessing"]["resize"] == "pad_square+resize"
        assert attrs["preprocessing"]["mean"] == pytest.approx([101.48761 / 255] * 3)
