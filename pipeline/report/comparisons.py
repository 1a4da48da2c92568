"""Paired permutation tests of each Table II column's best model vs every other model in that column."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from pipeline.errors import ChexError
from pipeline.progress import track
from pipeline.report.cells import can_be_best
from pipeline.report.collect import Collection, head_name
from pipeline.report.missing import rerun_hint
from pipeline.report.tables import TABLE2_METRICS, classification_datasets, is_oracle, result_cell
from pipeline.runs import CompareConfig, compare_runs
from pipeline.stats import adjust_pvalues

log = logging.getLogger(__name__)

COMPARISON_COLUMNS = (
    "dataset",
    "metric",
    "best_backbone",
    "best_head",
    "backbone",
    "head",
    "estimate_best",
    "estimate",
    "diff",
    "p_value",
    "p_adjusted",
    "n_permutations",
    "exact",
    "min_p",
    "note",
)


def best_vs_others(
    coll: Collection,
    n_permutations: int = 1000,
    seed: int = 0,
    adjust: str = "holm",
    progress: bool = False,
) -> tuple[pd.DataFrame, list[str]]:
    """One row per (data set, metric, other model): macro metric of the best model vs it, p and adjusted p.

    The best model is the one with the highest macro estimate in results.parquet among those Table II may call
    best (`pipeline.report.cells.can_be_best`: not an estimate whose CI was withheld as too uncertain), first in
    report order on ties, so the 'best' of the p-value table is the bold cell of Table II. Each pair of runs is
    tested once (both metrics at a time, `pipeline.runs.compare_runs`, over the
    outputs both runs average, so p tests the printed difference); n_permutations is the number of distinct
    swap patterns drawn (all 2**patients of them when that is fewer than asked: `exact`) and min_p the smallest
    p the test could give (pipeline.stats.permutation.smallest_p); p is adjusted
    (`adjust`) over the comparisons of one data set and metric. Returns the table and the problems met
    (missing predictions, runs not on the same test images): those rows keep p = NaN.
    """
    plan = []
    for dataset in classification_datasets(coll):
        runs = coll.full_runs(dataset)
        models = [m for m in coll.models(runs) if not is_oracle(m)]  # the oracle is a reference, not a rival
        for metric in TABLE2_METRICS:
            cells = {m: result_cell(coll.run(dataset, m).results, metric) for m in models}
            estimates = {m: cells[m].value for m in models}
            ranked = [m for m in models if can_be_best(cells[m])]  # the rule that bolds Table II's best
            if not ranked or sum(not np.isnan(v) for v in estimates.values()) < 2:
                continue
            best = max(ranked, key=lambda m: estimates[m])
            plan += [(dataset, metric, best, other, estimates) for other in models if other != best]

    pairs = list(dict.fromkeys((d, *sorted([b, o])) for d, _, b, o, _ in plan))
    tested: dict[tuple, pd.DataFrame | str] = {}
    for dataset, a, b in track(pairs, "paired permutation tests", enabled=progress and bool(pairs)):
        tested[(dataset, a, b)] = _compare(coll, dataset, a, b, n_permutations, seed)

    rows, problems = [], []
    for dataset, metric, best, other, estimates in plan:
        outcome = tested[(dataset, *sorted([best, other]))]
        p, note, drawn, exact, min_p = np.nan, "", n_permutations, False, np.nan
        if isinstance(outcome, str):
            note = outcome
            if outcome not in problems:
                problems.append(outcome)
        else:
            macro = outcome[(outcome["output"] == "macro") & (outcome["metric"] == metric)]
            if len(macro):
                p, note = float(macro["p_value"].iloc[0]), str(outcome["note"].iloc[0])
                drawn, exact = int(macro["n_permutations"].iloc[0]), bool(macro["exact"].iloc[0])
                min_p = float(macro["min_p"].iloc[0])
        rows.append(
            {
                "dataset": dataset,
                "metric": metric,
                "best_backbone": best[0],
                "best_head": best[1],
                "backbone": other[0],
                "head": other[1],
                "estimate_best": estimates[best],
                "estimate": estimates[other],
                "diff": estimates[best] - estimates[other],
                "p_value": p,
                "p_adjusted": np.nan,
                "n_permutations": drawn,
                "exact": exact,
                "min_p": min_p,
                "note": note,
            }
        )
    table = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    for _, index in table.groupby(["dataset", "metric"]).groups.items():
        table.loc[index, "p_adjusted"] = adjust_pvalues(table.loc[index, "p_value"].to_numpy(), adjust)
    return table, problems


def _compare(
    coll: Collection, dataset: str, a: tuple[str, str], b: tuple[str, str], n_permutations: int, seed: int
) -> pd.DataFrame | str:
    run_a, run_b = coll.run(dataset, a), coll.run(dataset, b)
    for run in (run_a, run_b):
        if run.predictions_path is None:
            return (
                f"no predictions.parquet for {dataset} {run.backbone}/{head_name(run.model[1])} ({run.folder}): "
                f"no permutation test against it; rerun {rerun_hint(run)}"
            )
    try:
        return compare_runs(run_a.folder, run_b.folder, CompareConfig(n_permutations=n_permutations, seed=seed))
    except ChexError as exc:
        log.warning("%s", exc)
        return f"{dataset}: cannot compare {'/'.join(a)} with {'/'.join(b)}: {exc}"
