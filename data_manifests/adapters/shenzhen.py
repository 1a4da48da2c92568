"""Shenzhen TB set: `CHNCXR_NNNN_L.png` (L = 1 TB, 0 normal) + optional ClinicalReadings/*.txt -> manifest;
seeded patient-level split with the paper's proportions (463/65/134)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from data_manifests.adapters.common import Source
from data_manifests.adapters.tb import build_tb


def build(sources: Sequence[str | Source], seed: int = 0) -> pd.DataFrame:
    return build_tb("shenzhen", "CHNCXR", sources, seed)
