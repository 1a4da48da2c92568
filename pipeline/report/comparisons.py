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
from pipeline.report.tables import (
    MACRO,
    TABLE2_METRICS,
    classification_datasets,
    endpoint_output,
    endpoints_of,
    is_oracle,
    result_cell,
    survival_datasets,
)
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
SURVIVAL_COMPARISON_COLUMNS = ("dataset", "endpoint", "output", *COMPARISON_COLUMNS[1:])


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
        models = _rivals(coll, dataset)
        for metric in TABLE2_METRICS:
            plan += column_plan(coll, dataset, models, metric, MACRO, {})
    table, problems = _run_plan(coll, plan, n_permutations, seed, progress)
    return _holm_by_column(table, ["dataset", "metric"], adjust)[list(COMPARISON_COLUMNS)], problems


def survival_best_vs_others(
    coll: Collection,
    n_permutations: int = 1000,
    seed: int = 0,
    adjust: str = "holm",
    progress: bool = False,
) -> tuple[pd.DataFrame, list[str]]:
    """Table IV's comparisons: per survival data set, endpoint and metric (AUPRC / AUROC of death within the
    horizon), the best model (bold in Table IV) vs each other, on that endpoint's binary output; adjusted within
    each column (data set, endpoint, metric). Columns: SURVIVAL_COMPARISON_COLUMNS."""
    plan = []
    for dataset in survival_datasets(coll):
        models = _rivals(coll, dataset)
        for endpoint in endpoints_of(coll, dataset):
            outputs = {endpoint_output(coll, dataset, endpoint, coll.run(dataset, m).results) for m in models}
            if len(outputs) != 1 or None in outputs:
                continue  # the runs do not share one binary output of this endpoint
            (output,) = outputs
            for metric in TABLE2_METRICS:
                plan += column_plan(coll, dataset, models, metric, output, {"endpoint": endpoint})
    table, problems = _run_plan(coll, plan, n_permutations, seed, progress)
    table = _holm_by_column(table, ["dataset", "endpoint", "metric"], adjust)
    return table[list(SURVIVAL_COMPARISON_COLUMNS)], problems


def column_plan(
    coll: Collection, dataset: str, models: list[tuple[str, str]], metric: str, output: str, extra: dict
) -> list[dict]:
    """The comparisons of one column: its best model (the cell the table bolds) vs each other model."""
    cells = {m: result_cell(coll.run(dataset, m).results, metric, None if output == MACRO else output)
             for m in models}  # fmt: skip
    estimates = {m: cells[m].value for m in models}
    ranked = [m for m in models if can_be_best(cells[m])]  # the rule that bolds the table's best
    if not ranked or sum(not np.isnan(v) for v in estimates.values()) < 2:
        return []
    best = max(ranked, key=lambda m: estimates[m])
    return [{"dataset": dataset, "metric": metric, "output": output, "best": best, "other": other,
             "estimates": estimates, **extra} for other in models if other != best]  # fmt: skip


def _rivals(coll: Collection, dataset: str) -> list[tuple[str, str]]:
    """The models of a data set's full-label runs, less the oracle (a reference, not a rival)."""
    return [m for m in coll.models(coll.full_runs(dataset)) if not is_oracle(m)]


def _run_plan(coll: Collection, plan: list[dict], n_permutations: int, seed: int, progress: bool):
    """Test each planned pair once (every output and metric at a time) and read off each planned row."""
    pairs = list(dict.fromkeys((c["dataset"], *sorted([c["best"], c["other"]])) for c in plan))
    tested: dict[tuple, pd.DataFrame | str] = {}
    for dataset, a, b in track(pairs, "paired permutation tests", enabled=progress and bool(pairs)):
        tested[(dataset, a, b)] = _compare(coll, dataset, a, b, n_permutations, seed)

    rows, problems = [], []
    for c in plan:
        best, other, estimates = c["best"], c["other"], c["estimates"]
        outcome = tested[(c["dataset"], *sorted([best, other]))]
        p, note, drawn, exact, min_p = np.nan, "", n_permutations, False, np.nan
        if isinstance(outcome, str):
            note = outcome
            if outcome not in problems:
                problems.append(outcome)
        else:
            mine = outcome[(outcome["output"] == c["output"]) & (outcome["metric"] == c["metric"])]
            if len(mine):
                p, note = float(mine["p_value"].iloc[0]), str(outcome["note"].iloc[0])
                drawn, exact = int(mine["n_permutations"].iloc[0]), bool(mine["exact"].iloc[0])
                min_p = float(mine["min_p"].iloc[0])
        rows.append(
            {
                **{k: v for k, v in c.items() if k not in ("best", "other", "estimates")},
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
    columns = list(dict.fromkeys([*SURVIVAL_COMPARISON_COLUMNS, *COMPARISON_COLUMNS]))
    return pd.DataFrame(rows, columns=columns), problems


def _holm_by_column(table: pd.DataFrame, keys: list[str], adjust: str) -> pd.DataFrame:
    """p_adjusted: `adjust` (Holm by default) over the comparisons of each column (the rows sharing `keys`)."""
    for _, index in table.groupby(keys).groups.items():
        table.loc[index, "p_adjusted"] = adjust_pvalues(table.loc[index, "p_value"].to_numpy(), adjust)
    return table


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
