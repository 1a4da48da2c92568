"""Each head's declaration (heads.registry) matches its class: the same options with the same defaults."""

from __future__ import annotations

import inspect

import pytest

from heads import HEADS, build_head, head_spec, head_specs
from heads.registry import HeadOptionError


@pytest.mark.parametrize("spec", head_specs(), ids=lambda s: s.name)
def test_declared_options_are_the_class_keyword_defaults(spec):
    params = inspect.signature(spec.load().__init__).parameters
    declared = {o.name: o.default for o in spec.options}
    # projection, grid: the store's basis and patch grid, not options
    structural = ("self", "dim", "n_layers", "n_outputs", "projection", "grid")
    keywords = {n: p.default for n, p in params.items() if n not in structural}
    assert declared == keywords
    assert HEADS[spec.name] is spec.load()


def test_specs_resolve_check_and_say_what_the_head_needs():
    assert head_spec("linear").uses_patch({}) is False and head_spec("linear").uses_patch({"avgpool": True})
    assert head_spec("glori").uses_patch({}) and head_spec("glori").has_attention
    assert head_spec("glori").config({"embed_dim": 16})["ffn_dim"] == 2048
    with pytest.raises(HeadOptionError, match="unknown"):
        head_spec("mlp").resolve({"width": 3})
    with pytest.raises(HeadOptionError, match="multiple"):
        head_spec("glori").resolve({"embed_dim": 12})
    head = build_head("glori", dim=8, n_layers=2, n_outputs=3, embed_dim=16, ffn_dim=8)
    assert head.config["embed_dim"] == 16 and head.needs_patch
