"""`ImageText`: a CLIP family's image-text alignment, as its family file builds it from the release files.

The image embedding is computed from the feature store, not by re-running the image tower: every CLIP family
stores, as the last layer's global token, exactly the vector its library projects (CheXzero `ln_post(x[:, 0])`,
transformers `post_layernorm(x[:, 0])`, open_clip's timm trunk `norm(x)[:, 0]` under `global_pool='token'`), so
image embedding = `F.linear(stored global token, image_projection, image_bias)`; a store is embedded once and
serves every prompt set. The text side is the family's text tower (pipeline/zeroshot/text.py) and tokenizer
(pipeline/zeroshot/tokenize.py); `logit_scale` is exp of the checkpoint's `logit_scale`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.zeroshot.tokenize import PromptTokenizer


@dataclass
class ImageText:
    family: str
    sha256: str  # of the weights file (the store's checkpoint_sha256 must equal it)
    image_projection: torch.Tensor  # (embed, D), as F.linear's weight
    image_bias: torch.Tensor | None
    text: nn.Module  # forward(ids, mask) -> (B, embed)
    tokenizer: PromptTokenizer
    logit_scale: float
    source: str = ""

    @property
    def embed_dim(self) -> int:
        return int(self.image_projection.shape[0])

    def image_embeddings(self, global_tokens: torch.Tensor) -> torch.Tensor:
        """Unit image embeddings (N, embed) of the stored last-layer global tokens (N, D)."""
        x = F.linear(global_tokens.float(), self.image_projection, self.image_bias)
        return F.normalize(x, dim=-1)

    @torch.no_grad()
    def text_embeddings(self, prompts: list[str]) -> torch.Tensor:
        """Unit text embeddings (len(prompts), embed)."""
        ids, mask = self.tokenizer.encode(prompts)
        return F.normalize(self.text(ids, mask).float(), dim=-1)

    def class_embedding(self, prompts: list[str]) -> torch.Tensor:
        """One unit vector for a set of prompts: the mean of their unit embeddings, renormalised (openai/CLIP's
        and CheXzero's `zeroshot_classifier`)."""
        return F.normalize(self.text_embeddings(prompts).mean(0), dim=-1)


def no_text_tower(family: str) -> str:
    return (
        f"backbone family {family!r} has no text tower: zero-shot classification needs a CLIP family "
        "(chexzero, biomedclip, pubmedclip)"
    )
