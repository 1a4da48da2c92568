"""`write_report`: every table and figure of the report from the probe outputs, plus the index page.

Layout under the output folder: tables/<name>.{md,csv,tex}, figures/<name>.{png,pdf}, index.md, index.html.
Missing inputs are named in the summary and on the index page; whatever can be made is still written.
The report is made in a temporary folder beside the output folder and swapped in whole at the end, so a
run killed midway leaves the previous report as it was (never new tables under an old index).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
from rich.table import Table

from pipeline.atomic import TEMP_SUFFIX, atomic_dir, write_csv_atomic
from pipeline.cautions import report_notes
from pipeline.errors import ConfigError
from pipeline.progress import progress_bar
from pipeline.report.alignment import alignment_table
from pipeline.report.attention import attention_figure, attention_runs
from pipeline.report.cells import ReportTable, seed_notes, undefined_notes
from pipeline.report.collect import Collection, collect_runs
from pipeline.report.figures import (
    FigureResult,
    label_efficiency_figure,
    model_style,
    per_finding_datasets,
    per_finding_figure,
    prevalence_band_datasets,
    prevalence_band_figure,
)
from pipeline.report.formats import FORMATS, to_csv, to_markdown, to_rich, to_text
from pipeline.report.index import IndexEntry, index_html, index_markdown, provenance, write_text_atomic
from pipeline.report.km import best_survival_run, km_figure
from pipeline.report.latex import to_latex
from pipeline.report.missing import missing_inputs, probe_hint
from pipeline.report.tables import (
    efficiency_datasets,
    endpoints_of,
    label_efficiency_table,
    survival_datasets,
)
from pipeline.report.tubes import tube_attention_figure, tube_runs
from pipeline.stats.multiple import ADJUST_METHODS
from pipeline.workspace import Workspace, resolve_workspace

log = logging.getLogger(__name__)

RENDERERS: dict[str, Callable[[ReportTable], str]] = {"md": to_markdown, "csv": to_csv, "tex": to_latex}


@dataclass
class ReportSummary:
    """What `write_report` wrote: every path, the inputs it missed, and Table II as terminal text."""

    out_dir: Path
    paths: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    headline: str = ""
    synthetic: bool = False
    tables: dict[str, ReportTable] = field(default_factory=dict)
    figures: list[FigureResult] = field(default_factory=list)
    cautions: list[str] = field(default_factory=list)  # e.g. findings with few test positives

    @property
    def index(self) -> Path:
        return self.out_dir / "index.md"

    def headline_tables(self) -> list[Table]:
        """Terminal tables: Table II's AUROC panel and Table IV's AUROC, C-index, hazard ratio and log-rank p."""
        shown = []
        if (table2 := self.tables.get("table2_performance")) is not None:
            shown.append(to_rich(table2, panel="AUROC"))
        if (table4 := self.tables.get("table4_survival")) is not None:
            shown.append(to_rich(table4, columns=[1, 2, 3, 4]))
        return shown


def write_report(
    workspace: Workspace | str | Path | None,
    out_dir: str | Path | None = None,
    formats: tuple[str, ...] | list[str] = ("md", "csv", "tex"),
    progress: bool = True,
    results: list[str | Path] | None = None,
    n_resamples: int = 1000,
    n_permutations: int = 1000,
    attention_findings: list[str] | None = None,
    adjust: str = "holm",
    seed: int = 0,
    figures: bool = True,
    image_roots: dict[str, Path] | None = None,
    cautions: tuple[str, ...] = (),
) -> ReportSummary:
    """Write the report's tables (`formats` of md/csv/tex), figures (PNG + PDF) and index to `out_dir`.

    Inputs are the workspace's results/ folder, or `results` (results roots, run folders or their Parquet
    files). `out_dir` defaults to the workspace's reports/. `n_resamples` is used for bootstrap CIs the
    report computes itself (prevalence bands; runs without results.parquet), `n_permutations` for the paired
    permutation tests of Table II's companion, adjusted with `adjust` (holm, fdr_bh, bonferroni).
    `figures=False` writes the tables and index only. `image_roots` ({dataset or "": folder}) is where
    attention figures look for test images first. `cautions` are shown first among the report's cautions
    (e.g. the tiny demo's "a smoke test, not evidence").
    """
    formats = tuple(dict.fromkeys(f.strip().lower() for f in formats if f.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ConfigError(f"--format takes a comma-separated list of {', '.join(FORMATS)}; got {list(formats)}")
    if adjust not in ADJUST_METHODS:
        raise ConfigError(f"--adjust must be one of {ADJUST_METHODS}, not {adjust!r}")
    ws = workspace if isinstance(workspace, Workspace) else resolve_workspace(workspace)
    out = Path(out_dir) if out_dir is not None else ws.reports_dir
    sources = [Path(p) for p in results] if results else None
    _check_report_folder(out)
    coll = collect_runs(sources, ws, n_resamples=n_resamples, seed=seed)
    coll.image_roots = {k: Path(v) for k, v in (image_roots or {}).items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    for stray in out.parent.glob(f".{out.name}.*{TEMP_SUFFIX}"):  # half-made reports of killed runs
        shutil.rmtree(stray, ignore_errors=True)
    with atomic_dir(out) as tmp:
        summary = _write_all(coll, ws, sources, tmp, formats, progress, n_resamples, n_permutations,
                             attention_findings, adjust, seed, figures, cautions)  # fmt: skip
    summary.out_dir = out
    summary.paths = [out / p.relative_to(tmp) for p in summary.paths]
    summary.figures = [replace(f, paths=[out / p.relative_to(tmp) for p in f.paths]) for f in summary.figures]
    return summary


def _check_report_folder(out: Path) -> None:
    """The output folder is replaced whole: refuse one that holds something other than a chex report."""
    if out.is_dir() and any(out.iterdir()) and not (out / "index.md").is_file():
        raise ConfigError(
            f"{out} is not empty and holds no chex report (no index.md); the report replaces its output folder "
            "whole, so give a new or empty folder with --out"
        )


def _write_all(coll, ws, sources, out, formats, progress, n_resamples, n_permutations, attention_findings,
               adjust, seed, figures, cautions=()) -> ReportSummary:  # fmt: skip
    summary = ReportSummary(out_dir=out, synthetic=coll.is_synthetic())
    summary.missing = [*coll.problems, *missing_inputs(coll)]
    steps = _figure_steps(coll) if figures else []
    with progress_bar("report", total=1 + len(steps), enabled=progress) as advance:
        entries = _write_tables(coll, summary, out, formats, n_permutations, adjust, seed)
        advance()
        for step in steps:
            made = step(coll, out / "figures", summary, n_resamples, seed, attention_findings)
            summary.figures += made
            summary.paths += [p for f in made for p in f.paths]
            advance()
    summary.missing = list(dict.fromkeys(summary.missing))
    summary.cautions = [*cautions, *report_notes(coll)]  # + findings with few test positives (pipeline/cautions.py)
    prov = provenance(coll, [str(p) for p in sources] if sources else [str(ws.root / "results")])
    markdown = index_markdown(coll, entries, summary.figures, summary.missing, prov, out, summary.cautions)
    summary.paths.append(write_text_atomic(out / "index.md", markdown))
    title = "chex report" + (" — SYNTHETIC" if summary.synthetic else "")
    summary.paths.append(write_text_atomic(out / "index.html", index_html(markdown, title)))
    table2 = summary.tables.get("table2_performance")
    summary.headline = to_text(table2) if table2 is not None and not table2.is_empty else ""
    return summary


def _figure_steps(coll: Collection) -> list[Callable[..., list[FigureResult]]]:
    """The figure makers that have inputs, so the progress bar counts only real work."""
    wanted = (
        (per_finding_datasets, _per_finding),
        (prevalence_band_datasets, _prevalence_bands),
        (survival_datasets, _kaplan_meier),
        (efficiency_datasets, _label_efficiency),
        (attention_runs, _attention),
        (tube_runs, _tube_tips),
        (_figure_tasks, _task_figures),
    )
    return [make for has_inputs, make in wanted if has_inputs(coll)]


def _figure_tasks(coll: Collection) -> list:
    """The task kinds (pipeline/tasks/) that draw figures of their own and have data sets in the report."""
    return [t for t in coll.tasks() if t.has_figures and coll.datasets_of(t)]


def _task_figures(coll, out, summary, n_resamples, seed, findings) -> list[FigureResult]:
    from pipeline.tasks.base import ReportSettings

    made = []
    for task in _figure_tasks(coll):
        part = task.report_figures(coll, out, ReportSettings(seed=seed, n_resamples=n_resamples))
        summary.missing += part.missing
        made += part.figures
    return made


def _write_tables(
    coll: Collection,
    summary: ReportSummary,
    out: Path,
    formats: tuple[str, ...],
    n_permutations: int,
    adjust: str,
    seed: int,
) -> list[IndexEntry]:
    from pipeline.tasks.base import ReportSettings

    tables: list[ReportTable] = []
    details: dict[str, pd.DataFrame] = {}  # a p-value table's unadjusted comparisons, as <name>_detail.csv
    for task in coll.tasks():  # each task kind's tables (pipeline/tasks/), in registry order
        part = task.report_tables(coll, ReportSettings(n_permutations, adjust, seed))
        summary.missing += part.missing
        tables += part.tables
        details.update(part.details)
    tables.append(label_efficiency_table(coll))
    tables.append(alignment_table(coll))  # empty (not written) without a zero-shot run
    entries = []
    for table in tables:
        if table.is_empty:
            continue
        summary.tables[table.name] = table
        table.notes += [n for n in undefined_notes(table) + seed_notes(table) if n not in table.notes]
        files = [write_text_atomic(out / "tables" / f"{table.name}.{fmt}", RENDERERS[fmt](table)) for fmt in formats]
        if table.name in details and "csv" in formats:
            files.append(_write_csv(details[table.name], out / "tables" / f"{table.name}_detail.csv"))
        summary.paths += files
        entries.append(IndexEntry(table, files))
    return entries


def _per_finding(coll, out, summary, n_resamples, seed, findings) -> list[FigureResult]:
    styles = model_style(coll.models())
    return [per_finding_figure(coll, d, styles, out) for d in per_finding_datasets(coll)]


def _prevalence_bands(coll, out, summary, n_resamples, seed, findings) -> list[FigureResult]:
    styles = model_style(coll.models())
    made = []
    for dataset in prevalence_band_datasets(coll):
        figure, _ = prevalence_band_figure(coll, dataset, styles, out, n_resamples=n_resamples, seed=seed)
        made.append(figure)
        if any(r.predictions_path is None for r in coll.full_runs(dataset)):
            summary.missing.append(
                f"{dataset}: some runs have no predictions.parquet; their prevalence-band AUPRC has no CI"
            )
    return made


def _kaplan_meier(coll, out, summary, n_resamples, seed, findings) -> list[FigureResult]:
    made = []
    for dataset in survival_datasets(coll):
        for endpoint in endpoints_of(coll, dataset):
            run = best_survival_run(coll, dataset, endpoint)
            if run is not None:
                made.append(km_figure(coll, run, endpoint, out))
            elif any(r.survival_path is not None for r in coll.full_runs(dataset)):
                summary.missing.append(
                    f"no Kaplan-Meier figure for {dataset} {endpoint}: in every run the median risk "
                    "puts all test subjects in one group (see the log-rank rows of results.parquet)"
                )
            else:
                summary.missing.append(
                    f"no survival.parquet in any {dataset} run: no Kaplan-Meier figure for {endpoint}; "
                    f"run {probe_hint(dataset, 'glori')}"
                )
    return made


def _label_efficiency(coll, out, summary, n_resamples, seed, findings) -> list[FigureResult]:
    styles = model_style(coll.models())
    return [label_efficiency_figure(coll, d, styles, out) for d in efficiency_datasets(coll)]


def _attention(coll, out, summary, n_resamples, seed, findings) -> list[FigureResult]:
    made = []
    for run in attention_runs(coll):
        wanted = findings if findings else None
        if findings:
            outputs = set(run.results["output"].astype(str))
            wanted = [f for f in findings if f in outputs] or None
            if wanted is None:
                continue  # the chosen findings belong to another data set
        figure, notes = attention_figure(coll, run, out, wanted)
        summary.missing += notes
        if figure is not None:
            made.append(figure)
    if findings and not made:
        summary.missing.append(f"no GLoRI attention maps for {', '.join(findings)} in any run; no attention figure")
    return made


def _tube_tips(coll, out, summary, n_resamples, seed, findings) -> list[FigureResult]:
    made = []
    for run in tube_runs(coll):
        figure, notes = tube_attention_figure(coll, run, out)
        summary.missing += notes
        made += [figure] if figure is not None else []
    return made


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    return write_csv_atomic(path, frame)
