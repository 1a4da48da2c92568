"""GLoRI's cost said before training (issue 16, item 7)."""

from __future__ import annotations

import logging

from pipeline.probe import ProbeConfig, ProbeJob
from pipeline.probe.estimate import announce_glori_costs, glori_cost
from tests.pipeline.probe.conftest import make_workspace


def _cost(width: int, ffn: int):
    return glori_cost(16, 2, 16, 3, 100, 20, 150, 2, 3, 16, {"embed_dim": width, "ffn_dim": ffn})


def test_a_wider_decoder_costs_more_memory_and_is_flagged():
    narrow, wide = _cost(16, 32), _cost(768, 2048)
    assert narrow.seconds > 0 and wide.seconds > 0
    assert wide.peak_bytes > narrow.peak_bytes
    assert wide.too_wide and not narrow.too_wide
    assert (wide.decoder_dim, wide.ffn_dim, wide.backbone_dim) == (768, 2048, 16)


def test_the_probe_announces_the_estimate_and_names_the_width_flags(tmp_path, caplog):
    ws = make_workspace(tmp_path / "ws", n_patients=20)
    jobs = [
        ProbeJob("toy", "glori", None, ProbeConfig(lrs=(1e-3, 1e-4), epochs=1)),
        ProbeJob("toy", "linear", None, ProbeConfig(epochs=1)),
        ProbeJob("missing", "glori", None, ProbeConfig(epochs=1)),  # left for the probe to report
    ]
    with caplog.at_level(logging.INFO, logger="pipeline.probe.estimate"):
        announce_glori_costs(ws, jobs)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "toy / toy-vit / glori" in messages[0] and "GB peak memory" in messages[0]
    assert "--glori-dim 16 --glori-ffn-dim 32" in messages[1]


def test_a_projected_pooled_store_is_estimated_on_its_own_tokens(tmp_path, caplog):
    from pipeline.embed.compress import compress_store, train_image_ids

    full = glori_cost(16, 2, 16, 3, 100, 20, 150, 2, 3, 16, {"embed_dim": 16, "ffn_dim": 32})
    small = glori_cost(16, 2, 4, 3, 100, 20, 150, 2, 3, 16, {"embed_dim": 16, "ffn_dim": 32}, rank=8)
    assert small.peak_bytes < full.peak_bytes  # 4 tokens of 8 dims cached per image, not 16 of 2 x 16
    ws = make_workspace(tmp_path / "ws", n_patients=20)
    compress_store(ws.features_dir("toy-vit"), ws.features_dir("toy-r8p2"), train_image_ids(ws), rank=8, pool=2,
                   progress=False)  # fmt: skip
    with caplog.at_level(logging.INFO, logger="pipeline.probe.estimate"):
        announce_glori_costs(ws, [ProbeJob("toy", "glori", "toy-r8p2", ProbeConfig(lrs=(1e-3,), epochs=1))])
    assert "toy / toy-r8p2 / glori" in caplog.records[0].getMessage()
