"""The text towers of the CLIP families, in torch alone: a CLIP text transformer and a BERT encoder.

- `CLIPText` (CheXzero / OpenAI CLIP, transformers CLIPTextModel): token + position embeddings, pre-norm blocks
  under a causal mask, `ln_final`, the hidden state at the end-of-text token, times `projection`
  (width x embed). Follows openai/CLIP clip/model.py (`CLIP.encode_text`) and transformers
  models/clip/modeling_clip.py (`CLIPTextTransformer`); its keys are openai/CLIP's, so CheXzero's state dict
  loads after only dropping the `visual.*` keys.
- `BertText` (BiomedCLIP's PubMedBERT under open_clip's `HFTextEncoder`): word + position + token-type(0)
  embeddings and LayerNorm, post-norm blocks over the non-padding tokens, a pooler (`cls`: the first token's
  last hidden state; `mean`: the masked mean; `pooler`: BERT's tanh dense on the first token), then open_clip's
  projection (none, linear, or mlp = linear, exact GELU, linear). Follows transformers models/bert/modeling_bert.py
  and open_clip src/open_clip/hf_model.py.
Both return unnormalised text embeddings (B, embed); attention runs through `scaled_dot_product_attention`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {"quick_gelu": QuickGELU, "gelu": nn.GELU}


class Attention(nn.Module):
    """Multi-head self-attention with one fused input projection (openai/CLIP `nn.MultiheadAttention` keys)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        b, n, c = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias).reshape(b, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int, act: str) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(width, hidden), ACTIVATIONS[act](), nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """A transformer block: pre-norm (CLIP: x + attn(ln_1 x), x + mlp(ln_2 x)) or post-norm (BERT:
    ln_1(x + attn x), ln_2(x + mlp x))."""

    def __init__(self, width: int, heads: int, hidden: int, act: str, eps: float, pre_norm: bool) -> None:
        super().__init__()
        self.pre_norm = pre_norm
        self.ln_1, self.ln_2 = nn.LayerNorm(width, eps=eps), nn.LayerNorm(width, eps=eps)
        self.attn = Attention(width, heads)
        self.mlp = Mlp(width, hidden, act)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.attn(self.ln_1(x), mask, causal)
            return x + self.mlp(self.ln_2(x))
        x = self.ln_1(x + self.attn(x, mask, causal))
        return self.ln_2(x + self.mlp(x))


class CLIPText(nn.Module):
    """CLIP's text transformer; `forward(ids, mask)` pools each row at its last real token, the end-of-text token
    the tokenizer closes every prompt with (openai/CLIP: `text.argmax(-1)`, the highest id; transformers: the
    first `eos_token_id`)."""

    def __init__(
        self, vocab: int, width: int, layers: int, heads: int, context: int, embed: int, act: str, eps: float,
        hidden: int | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.positional_embedding = nn.Parameter(torch.empty(context, width))
        self.blocks = nn.ModuleList(
            Block(width, heads, hidden or 4 * width, act, eps, pre_norm=True) for _ in range(layers)
        )
        self.ln_final = nn.LayerNorm(width, eps=eps)
        self.text_projection = nn.Parameter(torch.empty(width, embed))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(ids) + self.positional_embedding[: ids.shape[1]]
        for block in self.blocks:
            x = block(x, causal=True)
        x = self.ln_final(x)
        at = mask.sum(dim=1) - 1  # causal: the padding after it changes nothing before it
        return x[torch.arange(len(x)), at] @ self.text_projection


class BertText(nn.Module):
    """A BERT encoder, pooled and projected as open_clip's `HFTextEncoder`; `forward(ids, mask)`."""

    def __init__(
        self, vocab: int, width: int, layers: int, heads: int, positions: int, types: int, hidden: int, eps: float,
        pooler: str, projection: nn.Module,
    ) -> None:  # fmt: skip
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, width)
        self.position_embeddings = nn.Embedding(positions, width)
        self.token_type_embeddings = nn.Embedding(types, width)
        self.embeddings_norm = nn.LayerNorm(width, eps=eps)
        self.blocks = nn.ModuleList(Block(width, heads, hidden, "gelu", eps, pre_norm=False) for _ in range(layers))
        self.pooler_type = pooler
        self.pooler = nn.Linear(width, width) if pooler == "pooler" else None
        self.proj = projection

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n = ids.shape[1]
        x = self.word_embeddings(ids) + self.position_embeddings.weight[:n] + self.token_type_embeddings.weight[0]
        x = self.embeddings_norm(x)
        keys = mask[:, None, None, :]  # (B, 1, 1, N): attend to the real tokens only
        for block in self.blocks:
            x = block(x, keys)
        if self.pooler_type == "mean":
            weights = mask.unsqueeze(-1).to(x.dtype)
            pooled = (x * weights).sum(1) / weights.sum(1)
        elif self.pooler_type == "pooler":
            pooled = torch.tanh(self.pooler(x[:, 0]))
        else:
            pooled = x[:, 0]
        return self.proj(pooled)


def open_clip_projection(keys: dict[str, torch.Tensor]) -> nn.Module:
    """open_clip's text projection from its keys (`proj.weight` linear, `proj.0/2.weight` mlp, none: identity)."""
    if "proj.weight" in keys:
        w = keys["proj.weight"]
        return nn.Linear(w.shape[1], w.shape[0], bias="proj.bias" in keys)
    if "proj.0.weight" in keys:
        w0, w2 = keys["proj.0.weight"], keys["proj.2.weight"]
        return nn.Sequential(
            nn.Linear(w0.shape[1], w0.shape[0], bias="proj.0.bias" in keys),
            nn.GELU(),
            nn.Linear(w2.shape[1], w2.shape[0], bias="proj.2.bias" in keys),
        )
    return nn.Identity()


def clip_text_from(sd: dict[str, torch.Tensor], heads: int, act: str, eps: float, source: str) -> CLIPText:
    """A `CLIPText` sized from its state dict (in CLIPText's keys) and loaded strictly."""
    _require(sd, ("token_embedding.weight", "positional_embedding", "text_projection", "blocks.0.mlp.fc1.weight"),
             source)  # fmt: skip
    vocab, width = sd["token_embedding.weight"].shape
    model = CLIPText(
        vocab, width, _depth(sd), heads, sd["positional_embedding"].shape[0], sd["text_projection"].shape[1], act, eps,
        hidden=sd["blocks.0.mlp.fc1.weight"].shape[0],
    )  # fmt: skip
    return _loaded(model, sd, source)


def bert_text_from(sd: dict[str, torch.Tensor], heads: int, eps: float, pooler: str, source: str) -> BertText:
    """A `BertText` sized from its state dict (in BertText's keys) and loaded strictly."""
    _require(sd, ("word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight",
                  "blocks.0.mlp.fc1.weight"), source)  # fmt: skip
    vocab, width = sd["word_embeddings.weight"].shape
    model = BertText(
        vocab, width, _depth(sd), heads, sd["position_embeddings.weight"].shape[0],
        sd["token_type_embeddings.weight"].shape[0], sd["blocks.0.mlp.fc1.weight"].shape[0], eps, pooler,
        open_clip_projection(sd),
    )  # fmt: skip
    return _loaded(model, sd, source)


def _depth(sd: dict[str, torch.Tensor]) -> int:
    return 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))


def _require(sd: dict[str, torch.Tensor], keys: tuple[str, ...], source: str) -> None:
    from pipeline.errors import CheckpointError

    missing = [k for k in keys if k not in sd]
    if missing:
        raise CheckpointError(f"{source}: the text tower lacks {missing} (after conversion to chex's text layout)")


def _loaded(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> nn.Module:
    from pipeline.backbone.checkpoint import load_state_dict_strict

    load_state_dict_strict(model, {k: v.float() for k, v in sd.items()}, source=f"{source} (text tower)")
    return model.eval()
