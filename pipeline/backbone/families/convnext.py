"""ConvNeXt (ImageNet-22K, Table III/IV): a timm `save_for_hf` folder (config.json with `architecture`
convnext_* and `pretrained_cfg`, + model.safetensors / pytorch_model.bin), the original facebookresearch/ConvNeXt
`.pth` (`{'model': ...}`: `downsample_layers.*`, `stages.i.j.dwconv/pwconv1/pwconv2/gamma`, `norm`, `head`) or
a timm ConvNeXt state dict (`stem.*`, `stages.i.blocks.j.conv_dw`).

Built with timm's ConvNeXt; FB keys go through timm's own `convnext.checkpoint_filter_fn`. The classifier
(`head.fc`, FB `head`) is left out (logged); `head.norm` (FB `norm`) is the final norm, part of the backbone.
Token convention: the last L blocks of the last stage (L <= that stage's depth, 3 in every released size);
patch tokens = that block's feature-map positions (row-major on its h x w grid) through the final norm (a
LayerNorm over channels at each position); global token = the final norm of the spatial mean (what timm's
`forward_head(pre_logits=True)` and FB's `norm(x.mean([-2, -1]))` give for the last block); no registers.
Preprocessing: timm's eval transform from `pretrained_cfg` (short side to floor(size / crop_pct), centre crop,
bicubic, its mean/std); FB files: facebookresearch/ConvNeXt datasets.py `build_transform` (crop_pct 224/256
below 384 px, bicubic, ImageNet mean/std; warped to a square at 384 px and above).
"""

from __future__ import annotations

import logging
import math
import re

from pipeline.backbone.found import Found
from pipeline.backbone.registry import Family, register
from pipeline.errors import CheckpointError

log = logging.getLogger(__name__)

TOKENS = (
    "convnext: global = final norm of the spatial mean of each of the last L blocks of the last stage, "
    "patch = that block's feature-map positions (row-major) through the final norm, no registers"
)
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def convnext_tokens(model, x, n_layers: int):
    """(cls (B,L,C), patch (B,L,h·w,C), registers (B,L,0,C)) of the last `n_layers` blocks of the last stage."""
    import torch

    last = model.stages[-1]
    depth = len(last.blocks)
    if not 1 <= n_layers <= depth:
        raise ValueError(f"n_layers must be in 1..{depth} (blocks of ConvNeXt's last stage), got {n_layers}")
    x = model.stem(x)
    for stage in model.stages[:-1]:
        x = stage(x)
    x = last.downsample(x)
    outs = []
    for i, block in enumerate(last.blocks):
        x = block(x)
        if i >= depth - n_layers:
            outs.append(model.norm_pre(x))
    norm = model.head.norm
    cls = torch.stack([norm(o.mean((2, 3), keepdim=True)).flatten(1) for o in outs], dim=1)
    patch = torch.stack([norm(o).flatten(2).transpose(1, 2) for o in outs], dim=1)
    return cls, patch, patch.new_zeros((*patch.shape[:2], 0, patch.shape[-1]))


def _is_fb(keys) -> bool:
    return "downsample_layers.0.0.weight" in keys and any(re.match(r"^stages\.0\.0\.dwconv\.", k) for k in keys)


def _is_timm(keys) -> bool:
    return "stem.0.weight" in keys and any(re.match(r"^stages\.0\.blocks\.0\.conv_dw\.", k) for k in keys)


def _fb_arch(sd: dict) -> dict:
    n_stages = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"^stages\.(\d+)\.", k)))
    depths = [
        1 + max(int(m.group(1)) for k in sd if (m := re.match(rf"^stages\.{i}\.(\d+)\.", k))) for i in range(n_stages)
    ]
    dims = [sd[f"stages.{i}.0.dwconv.weight"].shape[0] for i in range(n_stages)]
    return dict(depths=tuple(depths), dims=tuple(dims))


def _timm_arch(sd: dict) -> dict:
    n_stages = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"^stages\.(\d+)\.", k)))
    depths = [
        1 + max(int(m.group(1)) for k in sd if (m := re.match(rf"^stages\.{i}\.blocks\.(\d+)\.", k)))
        for i in range(n_stages)
    ]
    dims = [sd[f"stages.{i}.blocks.0.conv_dw.weight"].shape[0] for i in range(n_stages)]
    return dict(depths=tuple(depths), dims=tuple(dims))


def _preprocessing(size: int, mean, std, interpolation: str, crop_pct: float | None):
    from pipeline.embed.preprocess import Preprocessing

    interp = "bicubic+antialias" if interpolation == "bicubic" else "bilinear+antialias"
    if crop_pct is None:  # FB at >= 384 px: warped to a square
        return Preprocessing(size, tuple(mean), tuple(std), resize="resize", interpolation=interp)
    resize_to = math.floor(size / crop_pct)
    return Preprocessing(
        size, tuple(mean), tuple(std), interpolation=interp, resize_to=None if resize_to == size else resize_to
    )


class ConvNeXtFamily(Family):
    def recognise(self, found: Found) -> bool:
        cfg = found.config() or {}
        if found.folder is not None and "pretrained_cfg" in cfg:
            return str(cfg.get("architecture", "")).startswith("convnext")
        if cfg or "open_clip_config.json" in found.configs:
            return False
        keys = found.keys()
        return _is_fb(keys) or _is_timm(keys)

    def load(self, found: Found, image_size: int | None = None, num_heads: int | None = None):
        import timm
        from timm.models.convnext import ConvNeXt, checkpoint_filter_fn

        from pipeline.backbone.checkpoint import file_sha256, load_state_dict_strict
        from pipeline.backbone.interface import Backbone

        cfg = found.config() or {}
        sd = dict(found.state_dict())
        if "pretrained_cfg" in cfg:
            args = {k: v for k, v in (cfg.get("model_args") or {}).items() if k not in ("num_classes", "pretrained")}
            model = timm.create_model(cfg["architecture"], pretrained=False, **args, num_classes=0)
            pre = cfg["pretrained_cfg"]
            size = image_size or int(pre.get("input_size", (3, 224, 224))[-1])
            prep = _preprocessing(
                size, pre.get("mean", _IMAGENET[0]), pre.get("std", _IMAGENET[1]), pre.get("interpolation", "bicubic"),
                float(pre.get("crop_pct") or 1.0),
            )  # fmt: skip
            arch = {"architecture": cfg["architecture"], **args}
        else:
            fb = _is_fb(sd)
            arch = _fb_arch(sd) if fb else _timm_arch(sd)
            model = ConvNeXt(num_classes=0, **arch)
            if fb:
                sd = checkpoint_filter_fn(sd, model)
            size = image_size or 224
            crop = None if (fb and size >= 384) else 224 / 256
            prep = _preprocessing(size, *_IMAGENET, "bicubic", crop)
            arch = {"architecture": "convnext", "depths": list(arch["depths"]), "dims": list(arch["dims"])}
        dropped = sorted(k for k in sd if k.startswith("head.fc."))
        if dropped:
            log.info("dropping classifier head keys %s (head.norm is the final norm and is kept)", dropped)
        sd = {k: v for k, v in sd.items() if not k.startswith("head.fc.")}
        load_state_dict_strict(model, sd, source=str(found.weights))
        model.eval()
        n_down = 2 ** (len(model.stages) - 1) * model.stem[0].stride[0]
        if size % n_down:
            raise CheckpointError(f"ConvNeXt input size {size} is not a multiple of its total stride {n_down}")
        dim = model.stages[-1].blocks[0].conv_dw.out_channels
        return Backbone(
            family=self.name,
            model=model,
            config={"arch": "convnext", **arch, "img_size": size},
            sha256=file_sha256(found.weights),
            preprocessing=prep,
            dim=dim,
            depth=len(model.stages[-1].blocks),
            n_registers=0,
            grid=(size // n_down, size // n_down),
            token_fn=convnext_tokens,
            token_convention=TOKENS,
            norm="ConvNeXt's final norm (timm head.norm, FB norm) at each position and on the spatial mean",
        )


register(
    ConvNeXtFamily(
        name="convnext",
        summary="ConvNeXt (e.g. convnext_*.fb_in22k): timm save_for_hf folders, FB .pth, timm state dicts",
        expects="folder: config.json (timm architecture convnext_*, pretrained_cfg) + model.safetensors or "
        "pytorch_model.bin; or a .pth with downsample_layers.* (FB) / stem.*, stages.N.blocks.* (timm)",
        preprocessing="timm pretrained_cfg: short side -> size/crop_pct, centre crop, bicubic, its mean/std; "
        "FB: crop_pct 224/256, bicubic, ImageNet mean/std (warp at >= 384 px)",
        follows="facebookresearch/ConvNeXt models/convnext.py + datasets.py build_transform; timm convnext.py "
        "(checkpoint_filter_fn, NormMlpClassifierHead)",
        priority=20,
        by_config=True,
    )
)
