"""The paper's tables built from the collected runs' results (numbers exactly as in results.parquet).

- `performance_table`: Table II style, rows = backbone x head, columns = data sets, panels AUPRC / AUROC,
  macro estimate with its 95% CI, best per column bold.
- `pvalue_table`: its companion, adjusted paired-permutation p of the column's best model vs each other model.
- `survival_table`: Table IV style, one panel per survival endpoint (PLCO CVD, all-cause).
- `label_efficiency_table`: macro AUROC at each label fraction, one panel per data set.
"""

from __future__ import annotations

import math

import pandas as pd

from pipeline.report.cells import UNDEFINED, Cell, Panel, ReportTable, Row, mark_best, missing_cell
from pipeline.report.collect import Collection, dataset_name, head_name
from pipeline.stats.classification import NO_CI, TOO_FEW
from pipeline.synth.specs import ORACLE_BACKBONE, ORACLE_HEAD

MACRO = "macro"
TABLE2_METRICS = ("auprc", "auroc")
METRIC_NAMES = {"auprc": "AUPRC", "auroc": "AUROC", "c_index": "C-index"}
ENDPOINT_NAMES = {"cvd": "CVD mortality", "all_cause": "All-cause mortality"}
ORACLE = (ORACLE_BACKBONE, ORACLE_HEAD)
ORACLE_LABELS = ("planted features (oracle)", "SYNTHETIC ceiling")
SURVIVAL_COLUMNS = ("AUPRC", "AUROC", "C-index", "HR (95% CI)", "Log-rank p", "Surv. low (%)", "Surv. high (%)")


MACRO_SET_NOTE = (
    "The macro averages one fixed set of findings per data set: those with positive and negative test labels "
    "(each run's results.parquet note names them); a finding a head saw no training positive of is scored by its "
    "training prior (a constant: AUROC 0.5) and stays in the set."
)


def result_cell(results: pd.DataFrame, metric: str, output: str | None = None, kind: str = "metric") -> Cell:
    """The estimate and CI of one metric: of `output`, else the macro row (or the only output of a binary task)."""
    rows = results[results["metric"] == metric]
    if output is None:
        macro = rows[rows["output"] == MACRO]
        rows = macro if len(macro) or rows["output"].nunique() != 1 else rows
    else:
        rows = rows[rows["output"] == output]
    if not len(rows):
        return missing_cell(kind)  # type: ignore[arg-type]
    row = rows.iloc[0]
    if pd.isna(row["estimate"]):  # the run exists; the metric cannot be computed (e.g. no positive test labels)
        note = str(row["note"]) if "note" in row.index and pd.notna(row["note"]) else ""
        reason = note.split("; ")[0].removeprefix("undefined: ")
        return Cell(kind=kind, text=UNDEFINED, note=reason)  # type: ignore[arg-type]
    value = float(row["estimate"]) if pd.notna(row["estimate"]) else math.nan
    low = float(row["ci_low"]) if pd.notna(row["ci_low"]) else math.nan
    high = float(row["ci_high"]) if pd.notna(row["ci_high"]) else math.nan
    note = str(row["note"]) if "note" in row.index and pd.notna(row["note"]) else ""
    withheld = next((part for part in note.split("; ") if part.startswith(NO_CI)), "")
    too_few = withheld.startswith(TOO_FEW)
    seeds = {}
    if "seed_sd" in row.index and pd.notna(row["seed_sd"]):  # a --seeds / --cv run: the seed SD goes beside the CI
        seeds = {"seed_sd": float(row["seed_sd"]), "n_seeds": int(row["n_seeds"])}
    return Cell(value, low, high, kind=kind, note=withheld, ci_withheld=too_few, **seeds)  # type: ignore[arg-type]


def model_labels(model: tuple[str, str]) -> tuple[str, str]:
    return ORACLE_LABELS if model == ORACLE else (model[0], head_name(model[1]))


def is_oracle(model: tuple[str, str]) -> bool:
    """The synthetic cohort's planted-features reference row (pipeline/synth/oracle.py), not a model."""
    return tuple(model) == ORACLE


def ranked_models(coll: Collection, runs) -> list[tuple[str, str]]:
    """Report order with the oracle row first (a reference to read the others against)."""
    models = coll.models(runs)
    return [m for m in models if is_oracle(m)] + [m for m in models if not is_oracle(m)]


def oracle_run(coll: Collection, dataset: str, model: tuple[str, str]):
    """The run of `model` on `dataset`; an oracle run counts only on a synthetic data set."""
    if is_oracle(model) and not coll.is_synthetic([dataset]):
        return None
    return coll.run(dataset, model)


def classification_datasets(coll: Collection) -> list[str]:
    """Data sets of Table II: those with full-training-set runs of the classification task (pipeline/tasks/)."""
    return coll.datasets_of("classification")


def macro_panels(datasets: list[str], models: list, run_of, oracle: list[bool] | None = None) -> list[Panel]:
    """One panel per TABLE2_METRICS: a row per model, its macro cell per data set (`run_of(dataset, model)`, a
    missing cell where it gives None), best per column bold (`oracle` rows never)."""
    panels = []
    for metric in TABLE2_METRICS:
        rows = []
        for model in models:
            cells = []
            for dataset in datasets:
                run = run_of(dataset, model)
                cells.append(result_cell(run.results, metric) if run else missing_cell())
            rows.append(Row(model_labels(model), cells))
        panels.append(Panel(METRIC_NAMES[metric], _bold_columns(rows, oracle=oracle)))
    return panels


def performance_table(coll: Collection) -> ReportTable:
    """Table II: macro AUPRC and AUROC (95% CI) per backbone x head and data set, best per column bold."""
    datasets = classification_datasets(coll)
    models = ranked_models(coll, [r for d in datasets for r in coll.full_runs(d)])
    panels = macro_panels(datasets, models, lambda d, m: oracle_run(coll, d, m), [is_oracle(m) for m in models])
    return ReportTable(
        name="table2_performance",
        number="Table II",
        title="Classification performance of frozen backbones with linear, GLoRI and MLP heads",
        caption=(
            "Macro-averaged AUPRC and AUROC on each data set's test split, with 95% bootstrap confidence intervals "
            f"in parentheses. {MACRO_SET_NOTE} Best model per column in bold; – marks a run that is missing."
            + ORACLE_NOTE
            * any(is_oracle(m) for m in models)
        ),
        row_header=["Backbone", "Head"],
        columns=[dataset_name(d) for d in datasets],
        panels=panels,
        panel_header="Metric",
        synthetic=coll.is_synthetic(datasets),
    )


ORACLE_NOTE = (
    " SYNTHETIC data: the 'planted features (oracle)' row is a logistic regression (Cox model for survival) on "
    "the features the generator planted in each image, fitted on train + val and scored like every other row: "
    "the ceiling a perfect reader of the images could reach. It is never bold and never compared."
)


def pvalue_table(coll: Collection, comparisons: pd.DataFrame, n_permutations: int, adjust: str) -> ReportTable:
    """Companion of Table II: adjusted paired-permutation p of each column's best model vs each other model."""
    datasets = classification_datasets(coll)
    models = [m for m in coll.models([r for d in datasets for r in coll.full_runs(d)]) if not is_oracle(m)]
    panels = []
    for metric in TABLE2_METRICS:
        rows = []
        for model in models:
            cells = []
            for dataset in datasets:
                found = comparisons[(comparisons["dataset"] == dataset) & (comparisons["metric"] == metric)]
                cells.append(pvalue_cell(found, model, _is_only_model(coll, dataset, model)))
            rows.append(Row(model_labels(model), cells))
        panels.append(Panel(METRIC_NAMES[metric], rows))
    method = {"holm": "Holm", "fdr_bh": "Benjamini-Hochberg", "bonferroni": "Bonferroni"}.get(adjust, adjust)
    return ReportTable(
        name="table2_pvalues",
        number="Table II (companion)",
        title="Paired permutation tests of the best model vs each other model",
        caption=(
            f"Two-sided paired permutation test ({permutation_phrase(comparisons, n_permutations)}; scores "
            "swapped per patient) of the difference in macro AUPRC / AUROC between the best model of each column "
            f"('best') and each other model, on the same test images. p-values are {method}-adjusted for multiple "
            "comparisons within each column (the family is that column's comparisons); unadjusted p-values are in "
            "table2_pvalues_detail.csv. The best model is Table II's bold cell (an estimate whose CI was withheld as "
            "too uncertain is tested against it, never called best); it is picked on the same test results before "
            "it is tested, "
            "which the adjustment does not cover: read a small p as evidence that the best differs from that "
            "model, not as a test of which is best. – marks a comparison that could not be made (missing "
            "predictions)."
        ),
        row_header=["Backbone", "Head"],
        columns=[dataset_name(d) for d in datasets],
        panels=panels,
        panel_header="Metric",
        synthetic=coll.is_synthetic(datasets),
    )


def pvalue_cell(column: pd.DataFrame, model: tuple[str, str], only_model: bool = False) -> Cell:
    """A model's cell in a p-value companion: 'best' (bold) for the column's best, else its adjusted p against
    it (– when it could not be tested). `column`: the comparisons of one column (best_vs_others' rows)."""
    best = column[(column["best_backbone"] == model[0]) & (column["best_head"] == model[1])]
    mine = column[(column["backbone"] == model[0]) & (column["head"] == model[1])]
    if len(best) or (not len(column) and only_model):
        return Cell(kind="text", text="best", bold=True)
    if len(mine) and pd.notna(mine["p_adjusted"].iloc[0]):
        return Cell(float(mine["p_adjusted"].iloc[0]), kind="pvalue")
    return missing_cell("pvalue")


def survival_pvalue_table(coll: Collection, comparisons: pd.DataFrame, n_permutations: int, adjust: str) -> ReportTable:
    """Companion of Table IV: per endpoint, the adjusted paired-permutation p of the AUPRC / AUROC column's best
    model (bold in Table IV) vs each other model."""
    datasets = survival_datasets(coll)
    panels = []
    for dataset in datasets:
        models = [m for m in coll.models(coll.full_runs(dataset)) if not is_oracle(m)]
        for endpoint in endpoints_of(coll, dataset):
            mine = comparisons[(comparisons["dataset"] == dataset) & (comparisons["endpoint"] == endpoint)]
            rows = [
                Row(model_labels(m), [pvalue_cell(mine[mine["metric"] == metric], m, len(models) == 1)
                                      for metric in TABLE2_METRICS])
                for m in models
            ]  # fmt: skip
            title = ENDPOINT_NAMES.get(endpoint, endpoint.replace("_", " "))
            panels.append(Panel(f"{dataset_name(dataset)}: {title}" if len(datasets) > 1 else title, rows))
    return ReportTable(
        name="table4_pvalues",
        number="Table IV (companion)",
        title="Paired permutation tests of the best model vs each other model (mortality)",
        caption=(
            f"Two-sided paired permutation test ({permutation_phrase(comparisons, n_permutations)}; scores "
            "swapped per patient) of the difference in AUPRC / AUROC of death within the horizon between the best "
            f"model of each column ('best': Table IV's bold cell) and each other model, on the same test subjects. "
            f"p-values are {_method(adjust)}-adjusted within each column (one endpoint and metric); unadjusted "
            "p-values are in table4_pvalues_detail.csv. The C-index has no paired test here. The best model is "
            "picked on the same test results before it is tested, which the adjustment does not cover. – marks a "
            "comparison that could not be made."
        ),
        row_header=["Backbone", "Head"],
        columns=[METRIC_NAMES[m] for m in TABLE2_METRICS],
        panels=panels,
        panel_header="Endpoint",
        synthetic=coll.is_synthetic(datasets),
    )


def _method(adjust: str) -> str:
    return {"holm": "Holm", "fdr_bh": "Benjamini-Hochberg", "bonferroni": "Bonferroni"}.get(adjust, adjust)


def permutation_phrase(comparisons: pd.DataFrame, n_permutations: int) -> str:
    """How many distinct permutations each test had and the smallest p it could give: '1000 random permutations,
    so p is at least 0.001', or per data set where every swap pattern of its few patients was enumerated."""
    sampled = f"{n_permutations} random permutations, so p is at least {1 / (1 + n_permutations):.2g}"
    exact = comparisons[comparisons["exact"].astype(bool)] if "exact" in comparisons else comparisons.iloc[:0]
    if not len(exact):
        return sampled
    few = [
        f"{dataset_name(d)}: all {int(g['n_permutations'].iloc[0])} swap patterns of its "
        f"{round(math.log2(g['n_permutations'].iloc[0]))} test patients enumerated, so p is at least "
        f"{g['min_p'].iloc[0]:.3g}"
        for d, g in exact.groupby("dataset", sort=False)
    ]
    rest = "; elsewhere " + sampled if len(exact) < len(comparisons) else ""
    return "; ".join(few) + rest


def survival_datasets(coll: Collection) -> list[str]:
    return [d for d in coll.datasets if coll.full_runs(d) and coll.is_survival(d)]


def survival_table(coll: Collection) -> ReportTable:
    """Table IV: per endpoint, AUPRC/AUROC of 'death within horizon', C-index, HR (CI), log-rank p, KM survival."""
    datasets = survival_datasets(coll)
    panels = []
    for dataset in datasets:
        runs = coll.full_runs(dataset)
        models = [m for m in ranked_models(coll, runs) if oracle_run(coll, dataset, m) is not None]
        for endpoint in endpoints_of(coll, dataset):
            rows = []
            for model in models:
                results = coll.run(dataset, model).results
                output = endpoint_output(coll, dataset, endpoint, results)
                cells = [
                    result_cell(results, "auprc", output) if output else missing_cell(),
                    result_cell(results, "auroc", output) if output else missing_cell(),
                    result_cell(results, "c_index", endpoint),
                    result_cell(results, "hazard_ratio", endpoint, kind="ratio"),
                    result_cell(results, "logrank_p", endpoint, kind="pvalue"),
                    result_cell(results, "survival_low_risk", endpoint, kind="percent"),
                    result_cell(results, "survival_high_risk", endpoint, kind="percent"),
                ]
                rows.append(Row(model_labels(model), cells))
            title = ENDPOINT_NAMES.get(endpoint, endpoint.replace("_", " "))
            if len(datasets) > 1:
                title = f"{dataset_name(dataset)}: {title}"
            oracle = [is_oracle(m) for m in models]
            panels.append(Panel(title, _bold_columns(rows, columns=(0, 1, 2), oracle=oracle)))
    horizon = _horizon(coll, datasets)
    return ReportTable(
        name="table4_survival",
        number="Table IV",
        title="Mortality prediction (PLCO): CVD and all-cause death",
        caption=(
            f"AUPRC and AUROC of death within {horizon} (binary output, test split) with 95% bootstrap CIs, "
            "complete-case: subjects censored before the horizon have no label and are left out, which can bias "
            "both (the IPCW time-dependent AUROC, `chex stats RUN --horizon`, does not leave them out); Harrell's "
            "C-index of the subject risk score; hazard ratio of the high- vs low-risk group (Cox, 95% CI); "
            "log-rank p of the two groups' Kaplan-Meier curves; end-of-follow-up Kaplan-Meier survival (%) of the "
            "low- and high-risk groups (95% band). Subjects are split at the median predicted risk on test (the "
            "paper's rule). Log-rank and Cox p-values are unadjusted: one test per model and endpoint, with no "
            "correction for the several models and endpoints tested, and the best model is picked on these same "
            "test results before it is tested, so a small p of the best row overstates the evidence (with 3 equal "
            "models the chance of a p < 0.05 somewhere is above 0.05). Best AUPRC, AUROC and C-index per panel "
            "in bold." + ORACLE_NOTE * any(is_oracle(m) for d in datasets for m in coll.models(coll.full_runs(d)))
        ),
        row_header=["Backbone", "Head"],
        columns=list(SURVIVAL_COLUMNS),
        panels=panels,
        panel_header="Endpoint",
        synthetic=coll.is_synthetic(datasets),
    )


def efficiency_datasets(coll: Collection) -> list[str]:
    """Data sets with label-fraction runs whose task's headline is the macro AUROC (the table's metric)."""
    return [d for d in coll.datasets if any(r.dataset == d and not r.is_full for r in coll.runs)
            and coll.task_of(d).headline_metric == "auroc"]  # fmt: skip


def label_fractions(coll: Collection, datasets: list[str]) -> list[float]:
    return sorted({round(r.label_fraction, 9) for r in coll.runs if r.dataset in datasets})


def fraction_name(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def label_efficiency_table(coll: Collection) -> ReportTable:
    """Macro AUROC (95% CI) at each fraction of the training labels, one panel per data set."""
    datasets = efficiency_datasets(coll)
    fractions = label_fractions(coll, datasets)
    panels = []
    for dataset in datasets:
        rows = []
        for model in [m for m in coll.models([r for r in coll.runs if r.dataset == dataset]) if not is_oracle(m)]:
            cells = []
            for fraction in fractions:
                run = coll.run(dataset, model, fraction)
                cells.append(result_cell(run.results, "auroc") if run else missing_cell())
            rows.append(Row(model_labels(model), cells))
        panels.append(Panel(dataset_name(dataset), _bold_columns(rows)))
    return ReportTable(
        name="table_label_efficiency",
        title="Label efficiency: macro AUROC by fraction of training labels",
        caption=(
            "Macro AUROC (95% bootstrap CI) on the full test split of heads trained on a patient-level random "
            f"fraction of the training labels. {MACRO_SET_NOTE} So every fraction averages the same findings. Best "
            "model per column and data set in bold; – marks a missing run."
        ),
        row_header=["Backbone", "Head"],
        columns=[fraction_name(f) for f in fractions],
        panels=panels,
        panel_header="Data set",
        synthetic=coll.is_synthetic(datasets),
    )


def endpoints_of(coll: Collection, dataset: str) -> list[str]:
    """Survival endpoints of a data set: the card's order, then any others its results hold."""
    found: list[str] = []
    for run in coll.full_runs(dataset):
        found += list(pd.unique(run.results.loc[run.results["metric"] == "logrank_p", "output"].astype(str)))
    card = coll.cards.get(dataset)
    ordered = [e.name for t in card.survival_tasks for e in t.endpoints] if card else []
    return [e for e in ordered if e in found] + [e for e in dict.fromkeys(found) if e not in ordered]


def endpoint_output(coll: Collection, dataset: str, endpoint: str, results: pd.DataFrame) -> str | None:
    """The binary 'event within horizon' output of an endpoint (card: `<event column>_<h>y`), if the run has it."""
    outputs = set(results.loc[results["metric"] == "auroc", "output"].astype(str)) - {MACRO}
    card = coll.cards.get(dataset)
    if card is not None:
        for task in card.survival_tasks:
            for e in task.endpoints:
                if e.name == endpoint and task.endpoint_output(e) in outputs:
                    return task.endpoint_output(e)
    candidates = [o for o in outputs if endpoint in o]
    return candidates[0] if len(candidates) == 1 else None


def _horizon(coll: Collection, datasets: list[str]) -> str:
    for dataset in datasets:
        card = coll.cards.get(dataset)
        for task in card.survival_tasks if card else []:
            if task.horizon_years is not None:
                return f"{task.horizon_years:g} years"
    return "the horizon"


def _bold_columns(
    rows: list[Row], columns: tuple[int, ...] | None = None, oracle: list[bool] | None = None
) -> list[Row]:
    """Best per column in bold; reference rows (`oracle` True) take no part."""
    if not rows:
        return rows
    n = len(rows[0].cells)
    grid = [list(r.cells) for r in rows]
    ranked = [i for i in range(len(rows)) if not (oracle and oracle[i])]
    for k in range(n) if columns is None else columns:
        marked = mark_best([grid[i][k] for i in ranked])
        for i, cell in zip(ranked, marked, strict=True):
            grid[i][k] = cell
    return [Row(r.labels, g) for r, g in zip(rows, grid, strict=True)]


def _is_only_model(coll: Collection, dataset: str, model: tuple[str, str]) -> bool:
    return [r.model for r in coll.full_runs(dataset)] == [model]
