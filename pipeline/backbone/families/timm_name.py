"""Any timm model by name with a state dict: `--family timm:MODEL_NAME` (never recognised on its own).

Built with `timm.create_model(MODEL_NAME, pretrained=False, num_classes=0)` (the classifier named by the model's
`pretrained_cfg['classifier']` is left out, logged), weights loaded strictly. Tokens through timm's
`forward_intermediates(return_prefix_tokens=True, norm=True)`, so the model must be a token model that offers it
(VisionTransformer, Eva, ...): global = first prefix token, registers = the other prefix tokens, patches on the
`patch_embed.grid_size` grid. ConvNeXt files have their own family (`convnext`). Preprocessing: timm's
`resolve_data_config` for the model (input size, crop_pct, interpolation, mean/std), as timm evaluates it.
Follows huggingface/pytorch-image-models timm/models/_features.py (forward_intermediates) and timm/data/config.py.
"""

from __future__ import annotations

import logging
import math

from pipeline.backbone.found import Found
from pipeline.backbone.registry import Family, register
from pipeline.errors import CheckpointError

log = logging.getLogger(__name__)

TOKENS = (
    "timm: global = first prefix token, registers = other prefix tokens, patch = patch tokens (row-major), "
    "each of the last L blocks through the model's final norm (forward_intermediates norm=True)"
)


def prefix_tokens(model, x, n_layers: int):
    """(cls (B,L,D), patch (B,L,P,D), registers (B,L,R,D)) from timm's forward_intermediates."""
    import torch

    out = model.forward_intermediates(
        x, indices=n_layers, return_prefix_tokens=True, norm=True, stop_early=True, output_fmt="NLC",
        intermediates_only=True,
    )  # fmt: skip
    spatial = torch.stack([s for s, _ in out], dim=1)
    prefix = torch.stack([p for _, p in out], dim=1)
    return prefix[:, :, 0], spatial, prefix[:, :, 1:]


class TimmByNameFamily(Family):
    def recognise(self, found: Found) -> bool:
        return False  # only by name: --family timm:MODEL_NAME

    def load(self, found: Found, image_size: int | None = None, num_heads: int | None = None):
        import inspect

        import timm
        from timm.data import resolve_data_config

        from pipeline.backbone.checkpoint import file_sha256, load_state_dict_strict
        from pipeline.backbone.interface import Backbone
        from pipeline.embed.preprocess import Preprocessing

        if not self.arg:
            raise CheckpointError("--family timm needs the model name: --family timm:MODEL_NAME")
        if not timm.is_model(self.arg):
            raise CheckpointError(f"--family timm:{self.arg}: timm has no model {self.arg!r} (timm.list_models)")
        kwargs = {"img_size": image_size} if image_size else {}
        model = timm.create_model(self.arg, pretrained=False, num_classes=0, **kwargs)
        if "return_prefix_tokens" not in inspect.signature(getattr(model, "forward_intermediates", print)).parameters:
            raise CheckpointError(f"timm model {self.arg!r} has no prefix/patch tokens (forward_intermediates)")
        head = model.pretrained_cfg.get("classifier") or "head"
        sd = {k.removeprefix("module."): v for k, v in found.state_dict().items()}
        dropped = sorted(k for k in sd if k.startswith(f"{head}."))
        if dropped:
            log.info("dropping classifier keys %s", dropped)
        sd = {k: v for k, v in sd.items() if not k.startswith(f"{head}.")}
        if image_size and "pos_embed" in sd and sd["pos_embed"].shape != model.pos_embed.shape:
            from timm.layers import resample_abs_pos_embed

            n_prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
            old = math.isqrt(sd["pos_embed"].shape[1] - n_prefix)
            sd["pos_embed"] = resample_abs_pos_embed(
                sd["pos_embed"], new_size=list(model.patch_embed.grid_size), old_size=(old, old),
                num_prefix_tokens=n_prefix, antialias=False,
            )  # fmt: skip
        load_state_dict_strict(model, sd, source=str(found.weights))
        model.eval()
        data = resolve_data_config({}, model=model)
        size = image_size or int(data["input_size"][-1])
        crop_pct = float(data.get("crop_pct") or 1.0)
        resize_to = math.floor(size / crop_pct)
        prep = Preprocessing(
            size, tuple(data["mean"]), tuple(data["std"]),
            interpolation="bicubic+antialias" if data.get("interpolation") == "bicubic" else "bilinear+antialias",
            resize_to=None if resize_to == size else resize_to,
        )  # fmt: skip
        grid = tuple(int(g) for g in model.patch_embed.grid_size)
        return Backbone(
            family=f"{self.name}:{self.arg}", model=model, config={"arch": "timm", "model": self.arg, "img_size": size},
            sha256=file_sha256(found.weights), preprocessing=prep, dim=model.embed_dim, depth=len(model.blocks),
            n_registers=model.num_prefix_tokens - 1, grid=grid, token_fn=prefix_tokens, token_convention=TOKENS,
            norm="the model's final norm applied to each layer (forward_intermediates norm=True)",
        )  # fmt: skip


register(
    TimmByNameFamily(
        name="timm",
        summary="any timm token model by name + its state dict (--family timm:MODEL_NAME)",
        expects="a state dict of timm.create_model(MODEL_NAME) (.pth/.bin/.safetensors)",
        preprocessing="timm resolve_data_config: short side -> size/crop_pct, centre crop, its interpolation, mean/std",
        follows="huggingface/pytorch-image-models (create_model, forward_intermediates, data/config.py)",
        priority=99,
    )
)
