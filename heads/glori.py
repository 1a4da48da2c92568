"""GLoRI (CheXFound's glori.py): global + local representation integration via per-output queries.

    patch (B, L, P, D) -> concat blocks (B, P, L·D) -> Linear -> ReLU      = memory (B, P, E), E = 768
    queries (K, E), standard-normal init, frozen unless `train_queries`   = tgt
    one ML-Decoder layer (no self-attention):
        tgt = norm1(tgt + dropout(tgt))
        tgt = norm2(tgt + dropout(MHA_8(tgt, memory, memory)))            (attention dropout too)
        tgt = norm3(tgt + dropout(linear2(dropout(relu(linear1(tgt))))))  (FFN E -> 2048 -> E)
    logit_k = w_k · [tgt_k (E) ; cls_1 .. cls_L (L·D)] + b_k              (GroupFC: one classifier per output)

On a projected store (pipeline/store/projection.py) the patch input is (B, 1, P, R) and the first Linear takes
R inputs: W' = W B with bias b + W μ (B = U S, the store's `stored_basis`), folded from the full-width W each pass
(`heads.base.fold_basis`), is the same model, trained the same way, as W on the reconstructed tokens μ + B z.
All dropouts are 0.1. The per-query attention weights (B, K, P), averaged over the 8 attention heads, are the
interpretability maps (`forward(..., return_attention=True)`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from heads.base import (
    Head,
    concat_blocks,
    concat_patch_blocks,
    fold_basis,
    per_head_layer_norm,
    per_head_linear,
)

PAPER_DIMS = (768, 2048)  # CheXFound's decoder width and feed-forward width


class GloriHead(Head):
    """GLoRI head; `forward` is the PyTorch reference, `stacked_forward` the batched sweep path."""

    name = "glori"
    needs_patch = True

    def __init__(
        self,
        dim: int,
        n_layers: int,
        n_outputs: int,
        embed_dim: int = 768,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        dropout: float = 0.1,
        train_queries: bool = False,
        projection: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        super().__init__(
            dim=dim, n_layers=n_layers, n_outputs=n_outputs, embed_dim=embed_dim, num_heads=num_heads,
            ffn_dim=ffn_dim, dropout=dropout, train_queries=train_queries,
            **({"projection_rank": int(projection[1].shape[1])} if projection is not None else {}),
        )  # fmt: skip
        self.dropout = dropout
        self.num_heads = num_heads
        self.embed = nn.Linear(dim * n_layers, embed_dim)  # full width even on a projected store (folded per pass)
        self.query_embed = nn.Embedding(n_outputs, embed_dim)  # N(0, 1) init, as ML-Decoder / CheXFound
        self.query_embed.weight.requires_grad_(train_queries)
        self.attn = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.norm3 = nn.LayerNorm(embed_dim)
        self.linear1 = nn.Linear(embed_dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, embed_dim)
        # GroupFC: output k has its own weight over [query output ; concatenated CLS].
        self.classifier_weight = nn.Parameter(torch.empty(n_outputs, embed_dim + dim * n_layers))
        self.classifier_bias = nn.Parameter(torch.zeros(n_outputs))
        nn.init.xavier_normal_(self.classifier_weight)
        self.keep_basis(projection)

    def fold(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.basis is None:
            return {}
        weight, bias = fold_basis(params["embed.weight"], params["embed.bias"], self.basis_mean, self.basis)
        return {"embed.weight": weight, "embed.bias": bias}

    def forward(self, cls: Tensor, patch: Tensor | None = None, return_attention: bool = False):
        """Logits (B, K); with `return_attention`, also the attention maps (B, K, P)."""
        if patch is None:
            raise ValueError("GloriHead needs patch tokens")
        drop = nn.functional.dropout
        weight, bias = self.embed.weight, self.embed.bias
        if self.basis is not None:
            weight, bias = fold_basis(weight, bias, self.basis_mean, self.basis)
        memory = torch.relu(nn.functional.linear(concat_patch_blocks(patch), weight, bias))
        tgt = self.query_embed.weight.unsqueeze(0).expand(cls.shape[0], -1, -1)
        tgt = self.norm1(tgt + drop(tgt, self.dropout, self.training))
        attended, weights = self.attn(tgt, memory, memory, need_weights=return_attention)
        tgt = self.norm2(tgt + drop(attended, self.dropout, self.training))
        ffn = self.linear2(drop(torch.relu(self.linear1(tgt)), self.dropout, self.training))
        tgt = self.norm3(tgt + drop(ffn, self.dropout, self.training))
        e = tgt.shape[-1]
        logits = (tgt * self.classifier_weight[:, :e]).sum(-1)
        logits = logits + concat_blocks(cls) @ self.classifier_weight[:, e:].T + self.classifier_bias
        return (logits, weights) if return_attention else logits

    def stacked_forward(self, params: dict[str, Tensor], cls: Tensor, patch: Tensor | None, training: bool) -> Tensor:
        if patch is None:
            raise ValueError("GloriHead needs patch tokens")
        drop = nn.functional.dropout
        eps = self.norm1.eps
        w_embed = params["embed.weight"]
        n_stack, e, f = w_embed.shape
        b, p = patch.shape[0], patch.shape[2]
        k = params["query_embed.weight"].shape[1]
        # The dominant cost: every patch token through H embed Linears, done as one GEMM.
        tokens = concat_patch_blocks(patch).reshape(b * p, f)
        memory = torch.relu(torch.addmm(params["embed.bias"].reshape(-1), tokens, w_embed.reshape(n_stack * e, f).T))
        memory = memory.reshape(b, p, n_stack, e).permute(2, 0, 1, 3).contiguous()  # (H, B, P, E)

        tgt = params["query_embed.weight"].unsqueeze(1).expand(n_stack, b, k, e)
        tgt = per_head_layer_norm(
            tgt + drop(tgt, self.dropout, training), params["norm1.weight"], params["norm1.bias"], eps
        )
        attended = self._cross_attention(params, tgt, memory, training)
        tgt = per_head_layer_norm(
            tgt + drop(attended, self.dropout, training), params["norm2.weight"], params["norm2.bias"], eps
        )
        hidden = torch.relu(per_head_linear(tgt, params["linear1.weight"], params["linear1.bias"]))
        ffn = per_head_linear(drop(hidden, self.dropout, training), params["linear2.weight"], params["linear2.bias"])
        tgt = per_head_layer_norm(
            tgt + drop(ffn, self.dropout, training), params["norm3.weight"], params["norm3.bias"], eps
        )

        weight = params["classifier_weight"]  # (H, K, E + C)
        logits = torch.einsum("hbke,hke->hbk", tgt, weight[:, :, :e])
        logits = logits + torch.einsum("bc,hkc->hbk", concat_blocks(cls), weight[:, :, e:])
        return logits + params["classifier_bias"][:, None, :]

    def _cross_attention(self, params: dict[str, Tensor], tgt: Tensor, memory: Tensor, training: bool) -> Tensor:
        """nn.MultiheadAttention(tgt, memory, memory) for H heads at once: tgt (H, B, K, E), memory (H, B, P, E).

        With few queries (K·heads < E) the key and value projections are folded into the queries instead of
        being applied to all P tokens: q·(W_k m + b_k) = (W_kᵀ q)·m + const (the constant cancels in the
        softmax) and Σ_p a_p (W_v m_p + b_v) = W_v (Σ_p a_p m_p) + (Σ_p a_p) b_v. Both are exact.
        """
        n_stack, b, k, e = tgt.shape
        p = memory.shape[2]
        nh = self.num_heads
        hd = e // nh
        w_in, b_in = params["attn.in_proj_weight"], params["attn.in_proj_bias"]
        w_q, w_k, w_v = w_in[:, :e], w_in[:, e : 2 * e], w_in[:, 2 * e :]
        b_q, b_k, b_v = b_in[:, :e], b_in[:, e : 2 * e], b_in[:, 2 * e :]
        q = per_head_linear(tgt, w_q, b_q).reshape(n_stack, b, k, nh, hd) / math.sqrt(hd)
        flat_memory = memory.reshape(n_stack, b * p, e)
        if k * nh < e:
            q_mem = torch.einsum("hbknd,hnde->hbkne", q, w_k.reshape(n_stack, nh, hd, e))
            scores = torch.matmul(q_mem.reshape(n_stack, b, k * nh, e), memory.transpose(-1, -2))
        else:
            keys = torch.baddbmm(b_k[:, None, :], flat_memory, w_k.transpose(1, 2)).reshape(n_stack, b, p, nh, hd)
            scores = torch.einsum("hbknd,hbpnd->hbknp", q, keys).reshape(n_stack, b, k * nh, p)
        attn = nn.functional.dropout(torch.softmax(scores, dim=-1), self.dropout, training)  # (H, B, K·nh, P)
        if k * nh < e:
            pooled = torch.matmul(attn, memory).reshape(n_stack, b, k, nh, e)
            values = torch.einsum("hbkne,hnde->hbknd", pooled, w_v.reshape(n_stack, nh, hd, e))
            values = values + attn.sum(-1).reshape(n_stack, b, k, nh, 1) * b_v.reshape(n_stack, 1, 1, nh, hd)
        else:
            v = torch.baddbmm(b_v[:, None, :], flat_memory, w_v.transpose(1, 2)).reshape(n_stack, b, p, nh, hd)
            values = torch.einsum("hbknp,hbpnd->hbknd", attn.reshape(n_stack, b, k, nh, p), v)
        values = values.reshape(n_stack, b, k, e)
        return per_head_linear(values, params["attn.out_proj.weight"], params["attn.out_proj.bias"])
