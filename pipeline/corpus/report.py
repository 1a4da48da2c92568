"""The corpus build report: per-source counts next to Table I, rendered as JSON-ready rows and Markdown."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from pipeline.corpus.sources import PAPER_TOTAL, TABLE_I, catalogue_source

REMOVAL_REASONS = ("unreadable", "leak_image", "leak_patient", "leak_near_image", "duplicate")


def source_rows(
    names: Sequence[str], corpus: pd.DataFrame, removed: pd.DataFrame, near_eval: pd.Series
) -> list[dict[str, Any]]:
    """One dict per source: paper count, manifest rows, removals by reason, kept, flags, kept / paper."""
    kept = corpus["source"].value_counts()
    flagged = corpus.loc[corpus["near_duplicate_of"].notna(), "source"].value_counts()
    by_reason = removed.groupby(["source", "reason"]).size()
    rows = []
    for name in names:
        entry = catalogue_source(name)
        removals = {reason: int(by_reason.get((name, reason), 0)) for reason in REMOVAL_REASONS}
        n_kept = int(kept.get(name, 0))
        paper = entry.paper_count if entry else None
        rows.append(
            {
                "source": name,
                "title": entry.title if entry else name,
                "paper_count": paper,
                "manifest_rows": n_kept + sum(removals.values()),
                **removals,
                "kept": n_kept,
                "near_duplicates_flagged": int(flagged.get(name, 0)),
                "near_eval_flagged": int(near_eval.get(name, 0)),
                "kept_vs_paper": round(n_kept / paper, 4) if paper else None,
            }
        )
    return rows


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    lines = ["# Pretraining corpus report", ""]
    lines.append(
        f"Created {report['created']}; subset: {report['subset'] or 'all given sources'}; "
        f"near-duplicate threshold: {report['near_threshold']} bits of a 64-bit pHash."
    )
    lines.append("")
    lines += _table(
        ["source", "Table I", "rows", "unreadable", "leaks", "duplicates", "kept", "kept/paper", "near-dup flagged"],
        [
            [
                r["title"],
                _num(r["paper_count"]),
                _num(r["manifest_rows"]),
                _num(r["unreadable"]),
                _num(r["leak_image"] + r["leak_patient"] + r["leak_near_image"]),
                _num(r["duplicate"]),
                _num(r["kept"]),
                f"{r['kept_vs_paper']:.3f}" if r["kept_vs_paper"] is not None else "-",
                _num(r["near_duplicates_flagged"]),
            ]
            for r in report["sources"]
        ],
    )
    given = {r["source"] for r in report["sources"]}
    missing = [s.title for s in TABLE_I if s.name not in given]
    totals = report["totals"]
    lines += ["", f"Kept {totals['kept']:,} images; the paper's CXR-1M has {PAPER_TOTAL:,}."]
    if report.get("subset_paper_count"):
        lines.append(f"The paper's count for subset {report['subset']}: {report['subset_paper_count']:,}.")
    if missing:
        lines.append(f"Table I sources not in this build: {', '.join(missing)}.")
    lines += ["", "## Contamination (dropped from the corpus)", ""]
    lines += _table(
        ["evaluation set", "source", "reason", "dropped"],
        [[c["eval_set"], c["source"], c["reason"], _num(c["dropped"])] for c in report["contamination"]],
    )
    lines += ["", f"Near matches to test images flagged, not dropped: {totals['near_eval_flagged']:,}."]
    lines += ["", "## Exact duplicates removed (same decoded pixels)", ""]
    lines += _table(
        ["kept in", "removed from", "images"],
        [[d["kept_source"], d["removed_source"], _num(d["images"])] for d in report["exact_duplicates"]],
    )
    lines += ["", "## Near-duplicate image pairs (flagged, kept)", ""]
    lines += _table(
        ["source a", "source b", "pairs"],
        [[p["source_a"], p["source_b"], _num(p["pairs"])] for p in report["near_duplicate_pairs"]],
    )
    return "\n".join(lines) + "\n"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return ["(none)"]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _num(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"
