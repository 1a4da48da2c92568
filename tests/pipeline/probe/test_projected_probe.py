"""The whole probe protocol on a projected (and pooled) store: GLoRI and the avgpool linear probe read R-dim
tokens natively, find the planted findings, and GLoRI's attention maps come back on the pooled grid."""

from __future__ import annotations

import json

import numpy as np
import torch

from pipeline.embed.compress import compress_store, train_image_ids
from pipeline.probe import ProbeConfig, run_probe
from tests.pipeline.probe.conftest import make_workspace

SMALL_GLORI = {"embed_dim": 32, "ffn_dim": 64}


def test_glori_and_avgpool_linear_run_the_protocol_on_a_projected_pooled_store(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    compress_store(ws.features_dir("toy-vit"), ws.features_dir("toy-r8p2"), train_image_ids(ws), rank=8, pool=2,
                   progress=False)  # fmt: skip
    config = ProbeConfig(n_resamples=30, epochs=8, lrs=(1e-3, 5e-3), save_attention=4, head_options=SMALL_GLORI)
    glori = run_probe(ws, "toy", "glori", backbone="toy-r8p2", config=config, progress=False)
    assert glori.test_macro_auroc > 0.75, glori
    weights = torch.load(glori.folder / "head.pt", weights_only=True)
    assert weights["embed.weight"].shape == (32, 8)  # GLoRI's first Linear takes R = 8 inputs
    run = json.loads((glori.folder / "run.json").read_text())
    # the rank is the store's (recorded with it, and in the run key); the head config holds declared options only
    assert run["store_attrs"]["projection"]["rank"] == 8 and "patch_dim" not in run["head_config"]
    maps = np.load(glori.folder / "attention" / "attention.npz")
    assert maps["attention"].shape == (4, 3, 4) and list(maps["grid"]) == [2, 2]  # 4x4 grid pooled by 2
    config = ProbeConfig(n_resamples=30, epochs=8, lrs=(1e-3, 5e-3), head_options={"avgpool": True})
    linear = run_probe(ws, "toy", "linear", backbone="toy-r8p2", config=config, progress=False)
    assert linear.test_macro_auroc > 0.75, linear
    assert torch.load(linear.folder / "head.pt", weights_only=True)["linear.weight"].shape == (3, 2 * 16 + 8)
