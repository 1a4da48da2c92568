"""The quarantine list: inputs that could not become samples, with the reason. Never silently dropped."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.shard_format import QUARANTINE_FILE

MISSING_REASON = "missing file"
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class QuarantineReport:
    """Counts and first examples of a quarantine list, for summaries."""

    n_quarantined: int
    n_missing: int
    missing_examples: list[str]
    reasons: dict[str, int]  # reason -> count, most common first


def read_quarantine(shard_dir: str | Path) -> pd.DataFrame:
    """quarantine.csv of a shard folder (path, image_id, reason, shard); empty frame if none was written."""
    path = Path(shard_dir) / QUARANTINE_FILE
    if not path.is_file():
        return pd.DataFrame(columns=["path", "image_id", "reason", "shard"])
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def report(quarantine: pd.DataFrame) -> QuarantineReport:
    missing = quarantine[quarantine["reason"] == MISSING_REASON] if len(quarantine) else quarantine
    reasons = quarantine["reason"].value_counts().to_dict() if len(quarantine) else {}
    return QuarantineReport(
        n_quarantined=len(quarantine),
        n_missing=len(missing),
        missing_examples=[str(p) for p in missing["path"].head(MAX_EXAMPLES)] if len(missing) else [],
        reasons={str(k): int(v) for k, v in reasons.items()},
    )
