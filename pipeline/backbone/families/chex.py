"""chex's own checkpoint folder: `model.pt` (tensors-only, timm ViT layout) + chex's `config.json`.

A chex config.json beside a DINOv2/timm/MAE weights file also counts: it fixes the architecture, and the
weights are converted by the layout they show (`converters.detect_layout`).
"""

from __future__ import annotations

from pipeline.backbone.found import Found, is_chex_config
from pipeline.backbone.registry import Family, register


class ChexFamily(Family):
    def recognise(self, found: Found) -> bool:
        cfg = found.config()
        return cfg is not None and is_chex_config(cfg)

    def load(self, found: Found, image_size: int | None = None, num_heads: int | None = None):
        from pipeline.backbone.checkpoint import file_sha256
        from pipeline.backbone.config import BackboneConfig
        from pipeline.backbone.converters import convert
        from pipeline.backbone.families._vit import vit_backbone

        config = BackboneConfig.from_dict(found.config())
        sd = convert(found.state_dict())
        return vit_backbone(self.name, sd, config, file_sha256(found.weights), str(found.weights), image_size)


register(
    ChexFamily(
        name="chex",
        summary="chex's own checkpoints (chex pretrain, save_checkpoint)",
        expects="folder: model.pt + chex config.json (BackboneConfig fields), or a weights file beside one",
        preprocessing="short side -> img_size, centre crop, bilinear+antialias, [0,1], config mean/std",
        follows="chex (pipeline/backbone/build.py)",
        priority=10,
        by_config=True,
    )
)
