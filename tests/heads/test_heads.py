from __future__ import annotations

import pytest
import torch
from torch import nn

from heads import HEADS, GloriHead, HeadStack, build_head, masked_bce

L, D, P, K = 2, 8, 12, 3
SMALL_GLORI = {"embed_dim": 32, "num_heads": 8, "ffn_dim": 24}


def _inputs(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, L, D, generator=g), torch.randn(b, L, P, D, generator=g)


def _randomise(module, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("linear", {}),
        ("linear", {"avgpool": True}),
        ("mlp", {}),
        ("glori", SMALL_GLORI),  # K * heads < E: keys/values folded into the queries
        ("glori", {"embed_dim": 16, "num_heads": 8, "ffn_dim": 24}),  # K * heads >= E: direct projections
    ],
)
def test_stacked_forward_equals_each_members_reference_forward(name, options):
    torch.manual_seed(0)
    stack = HeadStack(lambda: build_head(name, dim=D, n_layers=L, n_outputs=K, **options), 3).eval()
    _randomise(stack)
    cls, patch = _inputs()
    out = stack(cls, patch)
    assert out.shape == (3, 4, K)
    for h, member in enumerate(stack.members):
        torch.testing.assert_close(out[h], member(cls, patch), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out[0], out[1])  # members really differ


def test_glori_matches_an_ml_decoder_layer_built_from_torch_modules():
    """The reference forward itself: ML-Decoder's layer (nn.TransformerDecoderLayer minus self-attention)."""
    torch.manual_seed(0)
    head = GloriHead(D, L, K, **SMALL_GLORI).eval()
    _randomise(head)
    cls, patch = _inputs()
    memory = torch.relu(patch.permute(0, 2, 1, 3).reshape(4, P, L * D) @ head.embed.weight.T + head.embed.bias)
    tgt = head.query_embed.weight.expand(4, K, 32)
    tgt = head.norm1(tgt + tgt)  # dropout is the identity in eval mode
    q, k, v = head.attn.in_proj_weight.chunk(3)
    bq, bk, bv = head.attn.in_proj_bias.chunk(3)
    split = lambda x: x.reshape(4, -1, 8, 4).transpose(1, 2)  # noqa: E731
    qh, kh, vh = split(tgt @ q.T + bq), split(memory @ k.T + bk), split(memory @ v.T + bv)
    att = torch.softmax(qh @ kh.transpose(-1, -2) / 2.0, dim=-1)
    mixed = (att @ vh).transpose(1, 2).reshape(4, K, 32) @ head.attn.out_proj.weight.T + head.attn.out_proj.bias
    tgt = head.norm2(tgt + mixed)
    tgt = head.norm3(tgt + head.linear2(torch.relu(head.linear1(tgt))))
    features = torch.cat([tgt, cls.reshape(4, 1, L * D).expand(4, K, L * D)], dim=-1)
    want = (features * head.classifier_weight).sum(-1) + head.classifier_bias
    logits, maps = head(cls, patch, return_attention=True)
    torch.testing.assert_close(logits, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(maps, att.mean(1), rtol=1e-4, atol=1e-6)
    assert maps.shape == (4, K, P)
    torch.testing.assert_close(maps.sum(-1), torch.ones(4, K))


def test_glori_defaults_follow_chexfound():
    head = GloriHead(dim=1024, n_layers=4, n_outputs=5)
    assert head.embed.in_features == 4096 and head.embed.out_features == 768
    assert head.attn.num_heads == 8 and head.linear1.out_features == 2048
    assert head.classifier_weight.shape == (5, 768 + 4096)
    assert not head.query_embed.weight.requires_grad  # frozen queries, as CheXFound's code
    assert GloriHead(8, 2, 3, train_queries=True).query_embed.weight.requires_grad
    assert abs(float(head.query_embed.weight.std()) - 1.0) < 0.05  # standard-normal init
    assert head.needs_patch and not build_head("linear", dim=8, n_layers=2, n_outputs=1).needs_patch


def test_training_a_stack_equals_training_each_head_alone_with_its_own_lr():
    lrs = [1e-3, 1e-2]
    options = {**SMALL_GLORI, "dropout": 0.0}
    torch.manual_seed(0)
    stack = HeadStack(lambda: GloriHead(D, L, K, **options), 2)
    alone = [GloriHead(D, L, K, **options) for _ in lrs]
    for head, member in zip(alone, stack.members, strict=True):
        head.load_state_dict(member.state_dict())
    cls, patch = _inputs(6)
    labels = torch.tensor([[1, 0, float("nan")], [0, 1, 1], [1, 1, 0], [0, 0, 1], [float("nan"), 1, 0], [1, 0, 0]])
    opt = torch.optim.AdamW(stack.param_groups(lrs, 1e-4))
    opts = [torch.optim.AdamW([p for p in h.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
            for h, lr in zip(alone, lrs, strict=True)]  # fmt: skip
    for _ in range(3):
        opt.zero_grad()
        masked_bce(stack(cls, patch), labels).backward()
        opt.step()
        for head, o in zip(alone, opts, strict=True):
            o.zero_grad()
            masked_bce(head(cls, patch).unsqueeze(0), labels).backward()
            o.step()
    e = SMALL_GLORI["embed_dim"]
    for head, member in zip(alone, stack.members, strict=True):
        for (name, a), b in zip(head.state_dict().items(), member.state_dict().values(), strict=True):
            if name == "attn.in_proj_bias":
                # The key bias cancels in the softmax: its gradient is exactly 0 in the folded path but
                # round-off in torch's, which Adam turns into lr-sized noise. Neither changes any output.
                a, b = torch.cat([a[:e], a[2 * e :]]), torch.cat([b[:e], b[2 * e :]])
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=lambda m, name=name: f"{name}: {m}")
        torch.testing.assert_close(head.eval()(cls, patch), member.eval()(cls, patch), rtol=1e-4, atol=1e-5)
    assert torch.equal(stack.members[0].query_embed.weight, alone[0].query_embed.weight)  # frozen: unchanged


def test_masked_bce_ignores_unknown_labels_and_smooths():
    logits = torch.tensor([[[0.5, -1.0, 2.0]], [[1.0, 1.0, 1.0]]])  # (H=2, B=1, K=3)
    labels = torch.tensor([[1.0, float("nan"), 0.0]])
    bce = nn.functional.binary_cross_entropy_with_logits
    want = sum(bce(logits[h, 0, [0, 2]], torch.tensor([1.0, 0.0])) for h in range(2))
    torch.testing.assert_close(masked_bce(logits, labels), want)
    smooth = sum(bce(logits[h, 0, [0, 2]], torch.tensor([0.95, 0.05])) for h in range(2))
    torch.testing.assert_close(masked_bce(logits, labels, 0.1), smooth)
    assert float(masked_bce(logits, torch.full((1, 3), float("nan")))) == 0.0


def test_registry_and_unknown_head():
    assert set(HEADS) == {"linear", "glori", "mlp", "seg_linear", "seg_decoder"}
    assert build_head("mlp", dim=8, n_layers=2, n_outputs=3).label_smoothing == 0.1
    with pytest.raises(KeyError, match="known heads"):
        build_head("resnet", dim=8, n_layers=2, n_outputs=3)
