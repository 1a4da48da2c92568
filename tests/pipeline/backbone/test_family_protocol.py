"""The whole protocol on every backbone family: its release files (tiny, random-init, built as each family's test
builds them) -> `embed` -> linear and GLoRI probes (GLoRI attention maps laid out on the store's grid) -> report,
which lists the backbone with its family. Tiny on purpose: 30 images, 2 layers, one lr, one epoch."""

from __future__ import annotations

import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from PIL import Image

from pipeline.backbone.build import build_backbone
from pipeline.backbone.checkpoint import save_checkpoint
from pipeline.backbone.config import BackboneConfig
from pipeline.embed import EmbedOptions, embed_dataset
from pipeline.probe import ProbeConfig, run_probe
from pipeline.probe.protocol import run_folder
from pipeline.report.attention import load_attention
from pipeline.report.write import write_report
from tests.pipeline.backbone import test_family_biomedclip, test_family_pubmedclip, test_family_rad_dino
from tests.pipeline.backbone.reference_models import DinoVisionTransformer, MaskedAutoencoderViT
from tests.pipeline.backbone.test_family_chexzero import _openai_state_dict
from tests.pipeline.backbone.test_family_convnext import ARGS, _FBConvNeXt
from tests.pipeline.backbone.test_family_eva_x import release_file
from tests.pipeline.probe.conftest import make_workspace

LINEAR = ProbeConfig(lrs=(1e-3,), n_resamples=10, epochs=1)
GLORI = ProbeConfig(
    lrs=(1e-3,), n_resamples=10, epochs=1, head_options={"embed_dim": 8, "ffn_dim": 16}, save_attention=2
)


@dataclass(frozen=True)
class Case:
    family: str  # the store's `family` attribute
    grid: tuple[int, int]
    image_size: int | None = None
    num_heads: int | None = None
    named: str | None = None  # --family (never recognised on its own)


def _chex(root: Path) -> Path:
    cfg = BackboneConfig(embed_dim=32, depth=2, num_heads=2, patch_size=8, img_size=32)
    return save_checkpoint(build_backbone(cfg), cfg, root / "chex-ck")


def _dinov2(root: Path) -> Path:
    sd = DinoVisionTransformer(dim=32, depth=2, n_reg=2).state_dict()
    torch.save({"teacher": {f"backbone.{k}": v for k, v in sd.items()}}, root / "teacher_checkpoint.pth")
    return root / "teacher_checkpoint.pth"


def _mae(root: Path) -> Path:
    torch.save({"model": MaskedAutoencoderViT(dim=32, depth=2).state_dict(), "epoch": 1}, root / "mae.pth")
    return root / "mae.pth"


def _timm_vit(root: Path) -> Path:
    kw = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=3)
    torch.save(timm.create_model("vit_tiny_patch16_224", pretrained=False, **kw).state_dict(), root / "vit.pth")
    return root / "vit.pth"


def _rad_dino(root: Path) -> Path:
    test_family_rad_dino._release_folder(root / "rad-dino")
    return root / "rad-dino"


def _eva_x(root: Path) -> Path:
    release_file(root / "eva_x_small_patch16_merged520k_mim.pt", subln=False)
    return root / "eva_x_small_patch16_merged520k_mim.pt"


def _convnext(root: Path) -> Path:
    torch.manual_seed(1)
    torch.save({"model": _FBConvNeXt(ARGS["depths"], ARGS["dims"]).state_dict()}, root / "convnext.pth")
    return root / "convnext.pth"


def _chexzero(root: Path) -> Path:
    _openai_state_dict(root / "chexzero.pt")
    return root / "chexzero.pt"


def _pubmedclip(root: Path) -> Path:
    test_family_pubmedclip._release_folder(root / "pubmedclip")
    return root / "pubmedclip"


def _biomedclip(root: Path) -> Path:
    test_family_biomedclip._release_folder(root / "biomedclip")
    return root / "biomedclip"


def _timm_named(root: Path) -> Path:
    torch.manual_seed(0)
    torch.save(timm.create_model("test_vit", pretrained=False).state_dict(), root / "test_vit.pth")  # with its head
    return root / "test_vit.pth"


CASES = {
    "chex": (_chex, Case("chex", (4, 4))),
    "dinov2": (_dinov2, Case("dinov2", (4, 4), num_heads=2)),
    "mae": (_mae, Case("mae", (4, 4), num_heads=2)),
    "timm-vit": (_timm_vit, Case("timm-vit", (4, 4), num_heads=2)),
    "rad-dino": (_rad_dino, Case("rad-dino", (4, 4))),
    "eva-x": (_eva_x, Case("eva-x", (4, 4))),
    "convnext": (_convnext, Case("convnext", (2, 2), image_size=64)),
    "chexzero": (_chexzero, Case("chexzero", (4, 4), num_heads=2)),
    "pubmedclip": (_pubmedclip, Case("pubmedclip", (4, 4))),
    "biomedclip": (_biomedclip, Case("biomedclip", (2, 2), image_size=32)),
    "timm:NAME": (_timm_named, Case("timm:test_vit", (2, 2), image_size=32, named="timm:test_vit")),
}


@pytest.fixture(scope="module")
def base_workspace(tmp_path_factory) -> Path:
    """30 patients, one 70x64 grey image each (a non-square source: every family's resize policy runs)."""
    root = tmp_path_factory.mktemp("protocol") / "ws"
    ws = make_workspace(root, n_patients=30, images_per_patient=1)
    manifest = pd.read_parquet(ws.manifest_path("toy"))
    images = ws.images_dir("toy")
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for path in manifest["path"]:
        Image.fromarray(rng.integers(0, 256, size=(70, 64), dtype=np.uint8), mode="L").save(images / path)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_embed_probe_and_report_run_on_every_family(tmp_path, base_workspace, name):
    from pipeline.workspace import Workspace

    build, case = CASES[name]
    torch.manual_seed(0)  # every case's random init the same whatever ran before it in this process
    ws = Workspace(shutil.copytree(base_workspace, tmp_path / "ws"))
    checkpoint = build(tmp_path)
    backbone = f"bb-{name.replace(':', '-')}"
    embed_dataset(
        ws, "toy", checkpoint, backbone, image_size=case.image_size, num_heads=case.num_heads, family=case.named,
        options=EmbedOptions(workers=0, progress=False, n_layers=2, batch_size=32),
    )  # fmt: skip
    for head, config in (("linear", LINEAR), ("glori", GLORI)):
        summary = run_probe(ws, "toy", head, backbone=backbone, config=config, progress=False)
        assert 0.0 <= summary.test_macro_auroc <= 1.0 and math.isfinite(summary.test_macro_auroc)
    maps = load_attention(run_folder(ws, "toy", backbone, "glori", GLORI).root / "attention")
    assert maps is not None and maps.maps.shape[-2:] == case.grid
    assert np.isfinite(maps.maps).all()
    report = write_report(ws, progress=False, n_resamples=10, n_permutations=10, figures=False, formats=("md",))
    index = (report.out_dir / "index.md").read_text()
    assert f"backbone `{backbone}`: family {case.family}," in index
    table2 = next(p for p in report.paths if p.name == "table2_performance.md").read_text()
    rows = [line for line in table2.splitlines() if line.startswith(f"| {backbone} |")]
    assert len(rows) == 4  # AUPRC and AUROC x linear and GLoRI, each an estimate with its bootstrap CI
    for row in rows:
        m = re.search(r"\| \**(\d\.\d{3})\** \((\d\.\d{3})–(\d\.\d{3})\) \|$", row)
        assert m is not None, row
        est, low, high = (float(v) for v in m.groups())
        assert 0.0 <= est <= 1.0 and 0.0 <= low <= high <= 1.0, row
