"""Heads on projected tokens are the same model family: with W' = W U (bias b + W mean), GLoRI and the avgpool
linear probe on z give what they give with W on the reconstructed tokens mean + U z, to float tolerance."""

from __future__ import annotations

import numpy as np
import torch

from heads import GloriHead, HeadStack, LinearHead
from pipeline.store.projection import Projection

B, L, D, P, R, K = 3, 4, 8, 9, 5, 4


def _projection(seed=0) -> Projection:
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(L * D, R)))
    return Projection(rng.normal(size=L * D), basis, np.ones(R), float(L * D))


def _inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    return torch.randn(B, L, D, generator=g, dtype=f64), torch.randn(B, 1, P, R, generator=g, dtype=f64)


def test_glori_on_projected_tokens_equals_glori_on_reconstructed_tokens():
    torch.manual_seed(0)
    proj = _projection()
    full = GloriHead(D, L, K, embed_dim=16, ffn_dim=32).double().eval()
    small = GloriHead(D, L, K, embed_dim=16, ffn_dim=32, patch_dim=R).double().eval()
    assert small.embed.in_features == R and small.config["patch_dim"] == R and "patch_dim" not in full.config
    state = full.state_dict()
    w, b = state["embed.weight"], state["embed.bias"]
    u, mean = torch.from_numpy(proj.basis), torch.from_numpy(proj.mean)
    small.load_state_dict({**state, "embed.weight": w @ u, "embed.bias": b + w @ mean})
    cls, z = _inputs()
    x = proj.reconstruct(z, L)
    assert x.shape == (B, L, P, D)
    with torch.no_grad():
        want, want_att = full(cls, x, return_attention=True)
        got, got_att = small(cls, z, return_attention=True)
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(got_att, want_att, atol=1e-10, rtol=1e-10)
        # the stacked (sweep) path too
        stack_full = HeadStack(lambda: full, 1).eval()
        stack_small = HeadStack(lambda: small, 1).eval()
        torch.testing.assert_close(stack_small(cls, z)[0], stack_full(cls, x)[0], atol=1e-10, rtol=1e-10)


def test_avgpool_linear_on_projected_mean_token_equals_it_on_reconstructed_last_block():
    torch.manual_seed(0)
    proj = _projection(3)
    full = LinearHead(D, L, K, avgpool=True).double()
    small = LinearHead(D, L, K, avgpool=True, patch_dim=R).double()
    assert small.linear.in_features == L * D + R
    w, b = full.linear.weight.detach(), full.linear.bias.detach()
    w_cls, w_patch = w[:, : L * D], w[:, L * D :]  # w_patch reads the last block's mean token (D)
    u_last = torch.from_numpy(proj.basis).reshape(L, D, R)[-1]  # rows of U for block L: x_L = mean_L + U_L z
    mean_last = torch.from_numpy(proj.mean).reshape(L, D)[-1]
    with torch.no_grad():
        small.linear.weight.copy_(torch.cat([w_cls, w_patch @ u_last], dim=1))
        small.linear.bias.copy_(b + w_patch @ mean_last)
        cls, z = _inputs(2)
        torch.testing.assert_close(small(cls, z), full(cls, proj.reconstruct(z, L)), atol=1e-10, rtol=1e-10)
