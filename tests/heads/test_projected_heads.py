"""Heads on projected tokens are the same model, trained the same way: a head built with a store's basis keeps
full-width weights W and folds them (W' = W U, bias b + W mean), so on z it gives what W gives on the
reconstructed tokens mean + U z, and training it on z moves W exactly as training on the reconstructed tokens
does, whole-batch or micro-batched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from heads import GloriHead, HeadStack, LinearHead, build_head
from pipeline.probe.sweep import TrainSpec, train_stack
from pipeline.store.projection import Projection

B, L, D, P, R, K = 3, 4, 8, 9, 5, 4


def _projection(seed=0) -> Projection:
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(L * D, R)))
    return Projection(rng.normal(size=L * D), basis, np.ones(R), float(L * D))


def _basis(proj: Projection) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(proj.mean), torch.from_numpy(proj.basis)


def _inputs(seed=1, b=B):
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    return torch.randn(b, L, D, generator=g, dtype=f64), torch.randn(b, 1, P, R, generator=g, dtype=f64)


def test_glori_on_projected_tokens_equals_glori_on_reconstructed_tokens():
    torch.manual_seed(0)
    proj = _projection()
    full = GloriHead(D, L, K, embed_dim=16, ffn_dim=32).double().eval()
    small = GloriHead(D, L, K, embed_dim=16, ffn_dim=32, projection=_basis(proj)).double().eval()
    # the same parameters (the full-width W), so one checkpoint serves both; the basis is not saved with them
    assert small.embed.in_features == L * D and small.config["projection_rank"] == R
    assert "projection_rank" not in full.config and set(small.state_dict()) == set(full.state_dict())
    small.load_state_dict(full.state_dict())
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
    small = LinearHead(D, L, K, avgpool=True, projection=_basis(proj)).double()
    assert small.linear.in_features == L * D + D and small.basis.shape == (D, R)  # block L's rows of U
    small.load_state_dict(full.state_dict())
    cls, z = _inputs(2)
    with torch.no_grad():
        want = full(cls, proj.reconstruct(z, L))
        torch.testing.assert_close(small(cls, z), want, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(HeadStack(lambda: small, 1)(cls, z)[0], want, atol=1e-10, rtol=1e-10)
    # without avgpool no patch token is read, so the basis is ignored
    assert LinearHead(D, L, K, projection=_basis(proj)).basis is None


class _Tokens:
    """In-memory features in the probe's `batches` contract (positions, {"cls", "patch"})."""

    def __init__(self, cls: torch.Tensor, patch: torch.Tensor) -> None:
        self.cls, self.patch = cls, patch

    def batches(self, positions, batch_size, shuffle=False, seed=0, sample_views=False):
        order = np.random.default_rng(seed).permutation(positions) if shuffle else np.asarray(positions)
        for start in range(0, len(order), batch_size):
            pos = order[start : start + batch_size]
            yield pos, {"cls": self.cls[pos], "patch": self.patch[pos]}


@pytest.mark.parametrize("head, options", [("glori", {"embed_dim": 16, "ffn_dim": 32, "dropout": 0.0}),
                                           ("linear", {"avgpool": True})])  # fmt: skip
@pytest.mark.parametrize("micro_batch", [0, 2])
def test_training_on_projected_tokens_moves_the_weights_as_training_on_reconstructed_ones(head, options, micro_batch):
    proj = _projection(5)
    cls, z = _inputs(7, b=8)
    x = proj.reconstruct(z, L)
    labels = (np.random.default_rng(0).random((8, K)) < 0.4).astype(np.float64)
    spec = TrainSpec((1e-3, 3e-2), epochs=3, batch_size=4, micro_batch=micro_batch)

    def trained(projection, tokens):
        torch.manual_seed(0)
        make = lambda: build_head(head, dim=D, n_layers=L, n_outputs=K, projection=projection, **options)  # noqa: E731
        stack = HeadStack(make, 2).double()
        return train_stack(stack, _Tokens(cls, tokens), np.arange(8), labels, spec, torch.device("cpu"),
                           progress=False)  # fmt: skip

    on_z, on_x = trained(_basis(proj), z), trained(None, x)
    for (name, got), (_, want) in zip(on_z.state_dict().items(), on_x.state_dict().items(), strict=True):
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-7, msg=name)
    first = "members.0." + ("embed.weight" if head == "glori" else "linear.weight")  # the folded weight
    torch.manual_seed(0)
    untrained = HeadStack(lambda: build_head(head, dim=D, n_layers=L, n_outputs=K, **options), 2).double()
    assert not torch.allclose(on_z.state_dict()[first], untrained.state_dict()[first])
