"""Warnings a reader of the results needs before trusting them: findings with few test positives.

With fewer than ~20 positive test images a finding's AUROC has a wide CI, and the bold "best" of a table
means little; the probe says so before training, and the report after.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import pandas as pd

from pipeline.errors import ChexError

log = logging.getLogger(__name__)

MIN_TEST_POSITIVES = 20


def few_test_positives(labels: pd.DataFrame, columns: Iterable[str], threshold: int = MIN_TEST_POSITIVES) -> dict:
    """{output: positives} for the outputs with fewer than `threshold` positive (label 1) rows in `labels`."""
    counts = {c: int((pd.to_numeric(labels[c], errors="coerce") == 1).sum()) for c in columns if c in labels}
    return {c: n for c, n in counts.items() if n < threshold}


def message(dataset: str, few: dict[str, int], threshold: int = MIN_TEST_POSITIVES) -> str:
    shown = ", ".join(f"{c} ({n})" for c, n in list(few.items())[:8]) + (" ..." if len(few) > 8 else "")
    return (
        f"{dataset}: {len(few)} finding(s) with fewer than {threshold} positive test images: {shown}; "
        "their AUROC CIs are wide and a 'best' model on them means little"
    )


def warn_few_test_positives(workspace, datasets: Iterable[str]) -> list[str]:
    """Log (and return) a warning per data set whose manifest has findings with few test positives."""
    from pipeline.cards import read_card

    notes = []
    for dataset in dict.fromkeys(datasets):
        try:
            card = read_card(workspace, dataset)
            frame = pd.read_parquet(workspace.manifest_path(dataset))
        except (ChexError, OSError, ValueError):
            continue  # the probe itself reports a missing manifest or card
        few = few_test_positives(frame[frame["split"] == "test"], card.label_columns)
        if few:
            notes.append(message(dataset, few))
            log.warning("%s", notes[-1])
    return notes


def report_notes(collection) -> list[str]:
    """The same warning for each data set of a report, from its runs' test predictions."""
    notes = []
    for dataset in collection.datasets:
        runs = [r for r in collection.runs if r.dataset == dataset and r.is_full]
        predictions = next((p for p in (r.predictions() for r in runs) if p is not None), None)
        if predictions is None or "label" not in predictions:
            continue
        positives = predictions[predictions["label"] == 1].groupby("output")["image_id"].nunique()
        outputs = pd.unique(predictions["output"])
        few = {str(o): int(positives.get(o, 0)) for o in outputs if positives.get(o, 0) < MIN_TEST_POSITIVES}
        if few:
            notes.append(message(dataset, few))
    return notes
