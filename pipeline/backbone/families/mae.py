"""MAE pretraining checkpoints (facebookresearch/mae `models_mae.MaskedAutoencoderViT`, `{'model': ...}`):
encoder + `decoder_*` keys; the encoder is a timm ViT, the decoder and `mask_token` are left out."""

from __future__ import annotations

from pipeline.backbone.found import Found
from pipeline.backbone.registry import Family, register


def is_mae(keys) -> bool:
    return any(k.startswith(("decoder_", "decoder.")) for k in keys) and "patch_embed.proj.weight" in keys


def mae_filter(sd: dict) -> dict:
    """MAE pretraining checkpoint (encoder + decoder) -> chex layout: keep the encoder only."""
    from pipeline.backbone.families.timm_vit import timm_filter

    sd = {k: v for k, v in sd.items() if not k.startswith(("decoder_", "decoder.")) and k != "mask_token"}
    return timm_filter(sd)


class MaeFamily(Family):
    def recognise(self, found: Found) -> bool:
        return is_mae(found.keys())

    def load(self, found: Found, image_size: int | None = None, num_heads: int | None = None):
        from pipeline.backbone.checkpoint import file_sha256
        from pipeline.backbone.converters import infer_config
        from pipeline.backbone.families._vit import vit_backbone

        sd = mae_filter(dict(found.state_dict()))
        config = infer_config(sd, num_heads=num_heads)
        return vit_backbone(self.name, sd, config, file_sha256(found.weights), str(found.weights), image_size)


register(
    MaeFamily(
        name="mae",
        summary="MAE pretraining checkpoints (encoder taken, decoder left out)",
        expects="a .pth state dict {'model': ...} with patch_embed.*, blocks.N.*, decoder_* keys",
        preprocessing="short side -> size, centre crop, bilinear+antialias, [0,1], ImageNet mean/std",
        follows="facebookresearch/mae models_mae.py",
        priority=40,
    )
)
