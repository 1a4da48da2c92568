from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.synth import generate_cohort
from pipeline.workspace import Workspace

LEARN_DATASETS = ["cxrlt24", "chexpert", "shenzhen", "montgomery", "jsrt", "plco"]


@pytest.fixture(scope="session")
def tiny_ws(tmp_path_factory) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("tiny") / "ws")
    generate_cohort(ws, size="tiny", seed=0, progress=False)
    return ws


@pytest.fixture(scope="session")
def small64(tmp_path_factory) -> dict[bool, Workspace]:
    """The small cohort at 64 px, planted and null (same seed, so the same pixels)."""
    out = {}
    for null in (False, True):
        ws = Workspace(tmp_path_factory.mktemp("null" if null else "planted") / "ws")
        generate_cohort(
            ws, size="small", seed=1, null=null, image_size=64, datasets=LEARN_DATASETS, workers=2, progress=False
        )
        out[null] = ws
    return out


def image_bytes(ws: Workspace, dataset: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(ws.images_dir(dataset)).glob("*.png"))}
