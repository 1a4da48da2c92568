"""The whole protocol on non-DINOv2 families: embed (ConvNeXt's CNN tokens on a 2x2 grid, CheXzero's CLIP tokens)
-> linear and GLoRI probes (GLoRI attention maps laid out on the store's grid) -> report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pipeline.embed import EmbedOptions, embed_dataset
from pipeline.probe import ProbeConfig, run_probe
from pipeline.probe.protocol import run_folder
from pipeline.report.attention import load_attention
from pipeline.report.write import write_report
from tests.pipeline.backbone.test_family_chexzero import _openai_state_dict
from tests.pipeline.backbone.test_family_convnext import ARGS, _FBConvNeXt
from tests.pipeline.probe.conftest import make_workspace


@pytest.mark.slow
def test_embed_probe_and_report_run_on_convnext_and_chexzero(tmp_path):
    ws = make_workspace(tmp_path / "ws", n_patients=30, images_per_patient=1)
    manifest = pd.read_parquet(ws.manifest_path("toy"))
    images = ws.images_dir("toy")
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for path in manifest["path"]:
        Image.fromarray(rng.integers(0, 256, size=(70, 64), dtype=np.uint8), mode="L").save(images / path)
    torch.manual_seed(1)
    torch.save({"model": _FBConvNeXt(ARGS["depths"], ARGS["dims"]).state_dict()}, tmp_path / "convnext.pth")
    _openai_state_dict(tmp_path / "chexzero.pt")
    opts = EmbedOptions(workers=0, progress=False, n_layers=3)
    embed_dataset(ws, "toy", tmp_path / "convnext.pth", "convnext", image_size=64, options=opts)
    embed_dataset(ws, "toy", tmp_path / "chexzero.pt", "chexzero", num_heads=2, options=opts)
    config = ProbeConfig(n_resamples=20, epochs=2, head_options={"embed_dim": 16, "ffn_dim": 32}, save_attention=2)
    for backbone, grid in (("convnext", (2, 2)), ("chexzero", (4, 4))):
        for head in ("linear", "glori"):
            options = config if head == "glori" else ProbeConfig(n_resamples=20, epochs=2)
            summary = run_probe(ws, "toy", head, backbone=backbone, config=options, progress=False)
            assert 0.0 <= summary.test_macro_auroc <= 1.0
        maps = load_attention(run_folder(ws, "toy", backbone, "glori", config).root / "attention")
        assert maps is not None and maps.maps.shape[-2:] == grid
    report = write_report(ws, progress=False, n_resamples=20, n_permutations=20, figures=False)
    text = "\n".join(p.read_text() for p in report.paths if p.suffix == ".md")
    assert "convnext" in text and "chexzero" in text
