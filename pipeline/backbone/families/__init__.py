"""The backbone families chex knows: one module each, registered on import (this list is the registration).

Adding a family: a module here defining a `Family` subclass and calling `register(...)`, plus its line below.
"""

from pipeline.backbone.families import (  # noqa: F401
    biomedclip,
    chex,
    chexzero,
    convnext,
    dinov2,
    eva_x,
    mae,
    pubmedclip,
    rad_dino,
    timm_name,
    timm_vit,
)
