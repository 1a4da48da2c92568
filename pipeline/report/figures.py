"""Paper figures from the collected runs: per-finding AUROC, AUPRC by prevalence band, label efficiency.

Every figure is drawn at one paper column (3.5 in) with fonts that stay readable there, on matplotlib's
Agg/PDF canvases through `Figure` objects (no pyplot state), and saved as PNG and PDF by `save_figure`.
Kaplan-Meier curves live in km.py, attention overlays in attention.py.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.report.cells import Cell
from pipeline.report.collect import Collection, dataset_name, head_name
from pipeline.report.tables import MACRO, fraction_name, result_cell
from pipeline.stats import evaluate_predictions

COLUMN_WIDTH = 3.5  # inches: one column of a two-column paper
PNG_DPI = 200
BANDS = ("High", "Medium", "Low")
_STYLE = {
    "font.size": 7,
    "axes.titlesize": 7.5,
    "axes.labelsize": 7,
    "xtick.labelsize": 6.5,
    "ytick.labelsize": 6.5,
    "legend.fontsize": 6.5,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.1,
    "lines.markersize": 3.5,
    "pdf.fonttype": 42,  # embed TrueType so the PDF's text stays editable
    "font.family": "DejaVu Sans",
}
_MARKERS = "osD^vP*X"


@dataclass(frozen=True)
class FigureResult:
    """The files of one figure and its caption (SYNTHETIC-marked when made from the synthetic cohort)."""

    name: str
    caption: str
    paths: list[Path]
    title: str = ""


@contextmanager
def paper_style() -> Iterator[None]:
    with matplotlib.rc_context(_STYLE):
        yield


def save_figure(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write `stem`.png and `stem`.pdf atomically (temp name, then rename); returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in ("png", "pdf"):
        path = out_dir / f"{stem}.{fmt}"
        tmp = out_dir / f".{stem}.{fmt}.tmp"
        fig.savefig(tmp, format=fmt, dpi=PNG_DPI)  # constrained layout already fits the margins
        os.replace(tmp, path)
        paths.append(path)
    return paths


def model_style(models: list[tuple[str, str]]) -> dict[tuple[str, str], dict]:
    """One colour and marker per model, the same in every figure of a report."""
    colors = matplotlib.colormaps["tab10"].colors
    return {
        m: {"color": colors[k % len(colors)], "marker": _MARKERS[k % len(_MARKERS)], "label": model_label(m)}
        for k, m in enumerate(models)
    }


def model_label(model: tuple[str, str]) -> str:
    return f"{model[0]} · {head_name(model[1])}"


def synthetic_prefix(synthetic: bool) -> str:
    return "SYNTHETIC — " if synthetic else ""


def per_finding_datasets(coll: Collection) -> list[str]:
    """Multi-label data sets (more than one output) of the classification table."""
    out = []
    classification = set(coll.datasets_of("classification"))  # the classification task's (pipeline/tasks/)
    for dataset in coll.datasets:
        runs = coll.full_runs(dataset)
        if runs and dataset in classification and len(_outputs(runs[0].results)) > 1:
            out.append(dataset)
    return out


def per_finding_figure(coll: Collection, dataset: str, styles: dict, out_dir: Path) -> FigureResult:
    """Dot plot: AUROC of every finding (rows, most prevalent first) for every model (markers)."""
    runs = coll.full_runs(dataset)
    models = coll.models(runs)
    prevalence = _prevalence(runs)
    findings = sorted(prevalence, key=lambda f: (-prevalence[f] if not math.isnan(prevalence[f]) else 1, f))
    synthetic = coll.is_synthetic([dataset])
    height = max(2.0, 0.9 + 0.125 * len(findings))
    with paper_style():
        fig = Figure(figsize=(COLUMN_WIDTH, height), layout="constrained")
        ax = fig.add_subplot()
        y = np.arange(len(findings))[::-1]
        low = 1.0
        for k, model in enumerate(models):
            results = coll.run(dataset, model).results
            values = np.array([result_cell(results, "auroc", f).value for f in findings])
            offset = (k - (len(models) - 1) / 2) * min(0.12, 0.6 / max(len(models), 1))
            style = styles[model]
            ax.plot(
                values,
                y + offset,
                linestyle="none",
                marker=style["marker"],
                color=style["color"],
                label=style["label"],
                markersize=3,
                alpha=0.9,
            )
            if np.isfinite(values).any():
                low = min(low, float(np.nanmin(values)))
        ax.axvline(0.5, color="0.6", linewidth=0.6, linestyle=":")
        ax.set_yticks(y, [_finding_label(f, prevalence[f]) for f in findings])
        ax.set_ylim(-0.7, len(findings) - 0.3)
        ax.set_xlim(max(0.0, min(0.5, low) - 0.03), 1.02)
        ax.set_xlabel("AUROC (test split)")
        ax.grid(axis="y", color="0.92", linewidth=0.5)
        ax.set_axisbelow(True)
        ax.set_title(f"{synthetic_prefix(synthetic)}{dataset_name(dataset)}: AUROC per finding", loc="right")
        fig.legend(loc="outside upper center", ncols=min(len(models), 2), handletextpad=0.2, columnspacing=0.8)
        stem = f"per_finding_auroc_{dataset}"
        paths = save_figure(fig, out_dir, stem)
    caption = (
        f"{synthetic_prefix(synthetic)}AUROC of each of {dataset_name(dataset)}'s {len(findings)} findings on the "
        "test split, per backbone and head; findings ordered by test prevalence (in parentheses). "
        "The dotted line marks chance (0.5); findings without positive test labels have no marker."
    )
    title = f"{synthetic_prefix(synthetic)}{dataset_name(dataset)}: AUROC per finding"
    return FigureResult(stem, caption, paths, title)


def prevalence_band_datasets(coll: Collection, min_outputs: int = 6) -> list[str]:
    return [d for d in per_finding_datasets(coll) if len(_outputs(coll.full_runs(d)[0].results)) >= min_outputs]


def prevalence_band_figure(
    coll: Collection, dataset: str, styles: dict, out_dir: Path, n_resamples: int = 1000, seed: int = 0
) -> tuple[FigureResult, pd.DataFrame]:
    """Macro AUPRC per prevalence band (tertiles of the findings' test prevalence) with bootstrap 95% CIs.

    The band's macro and CI come from `evaluate_predictions` on the band's findings alone (a band mean's CI
    cannot be built from the per-finding CIs). Runs without predictions get the mean of their per-finding
    AUPRCs without error bars. Returns the figure and the numbers drawn.
    """
    runs = coll.full_runs(dataset)
    models = coll.models(runs)
    prevalence = _prevalence(runs)
    bands = prevalence_bands(prevalence)
    rows = []
    for model in models:
        run = coll.run(dataset, model)
        predictions = run.predictions()
        for band, findings in bands.items():
            if predictions is not None:
                subset = predictions[predictions["output"].isin(findings)]
                cell = result_cell(evaluate_predictions(subset, n_resamples=n_resamples, seed=seed), "auprc", MACRO)
            else:
                values = np.array([result_cell(run.results, "auprc", f).value for f in findings])
                cell = Cell(float(np.nanmean(values)) if np.isfinite(values).any() else math.nan)
            rows.append(
                {
                    "backbone": model[0],
                    "head": model[1],
                    "band": band,
                    "n_findings": len(findings),
                    "auprc": cell.value,
                    "ci_low": cell.low,
                    "ci_high": cell.high,
                    "mean_prevalence": float(np.nanmean([prevalence[f] for f in findings])),
                }
            )
    numbers = pd.DataFrame(rows)
    synthetic = coll.is_synthetic([dataset])
    with paper_style():
        fig = Figure(figsize=(COLUMN_WIDTH, 2.5), layout="constrained")
        ax = fig.add_subplot()
        x = np.arange(len(bands))
        width = 0.8 / max(len(models), 1)
        for k, model in enumerate(models):
            mine = numbers[(numbers["backbone"] == model[0]) & (numbers["head"] == model[1])].set_index("band")
            mine = mine.reindex(list(bands))
            value = mine["auprc"].to_numpy(dtype=float)
            err = np.vstack([value - mine["ci_low"].to_numpy(float), mine["ci_high"].to_numpy(float) - value])
            style = styles[model]
            ax.errorbar(
                x + (k - (len(models) - 1) / 2) * width,
                value,
                yerr=np.nan_to_num(err),
                linestyle="none",
                marker=style["marker"],
                color=style["color"],
                label=style["label"],
                capsize=1.5,
                elinewidth=0.7,
                markersize=3,
            )
        baseline = numbers.drop_duplicates("band").set_index("band")["mean_prevalence"].reindex(list(bands))
        for k, value in enumerate(baseline):
            ax.hlines(
                value,
                k - 0.45,
                k + 0.45,
                color="0.5",
                linewidth=0.7,
                linestyle="--",
                label="chance (mean prevalence)" if k == 0 else None,
            )
        ax.set_xticks(x, [_band_label(b, bands[b], prevalence) for b in bands])
        ax.set_ylabel("Macro AUPRC (95% CI)")
        top = float(np.nanmax(numbers[["auprc", "ci_high"]].to_numpy(float)))
        ax.set_ylim(0, 1.03 if top > 0.9 else max(0.2, top * 1.1))
        ax.set_title(f"{synthetic_prefix(synthetic)}{dataset_name(dataset)}: AUPRC by prevalence band", loc="left")
        handles, labels = ax.get_legend_handles_labels()
        order = sorted(range(len(labels)), key=lambda k: labels[k].startswith("chance"))  # models first
        fig.legend([handles[k] for k in order], [labels[k] for k in order], loc="outside upper center", ncols=2,
                   handletextpad=0.2, columnspacing=0.8)  # fmt: skip
        stem = f"auprc_by_prevalence_{dataset}"
        paths = save_figure(fig, out_dir, stem)
    caption = (
        f"{synthetic_prefix(synthetic)}Macro AUPRC of {dataset_name(dataset)}'s findings grouped into prevalence "
        "tertiles (high / medium / low test prevalence; ranges under the axis), with 95% bootstrap CIs "
        f"({n_resamples} resamples of test patients). Dashed lines: a random classifier's AUPRC (mean prevalence)."
    )
    title = f"{synthetic_prefix(synthetic)}{dataset_name(dataset)}: AUPRC by prevalence band"
    return FigureResult(stem, caption, paths, title), numbers


def prevalence_bands(prevalence: dict[str, float]) -> dict[str, list[str]]:
    """Findings with a defined prevalence split into tertiles, most prevalent first ('High', 'Medium', 'Low')."""
    ranked = sorted((f for f, p in prevalence.items() if not math.isnan(p) and p > 0), key=lambda f: -prevalence[f])
    parts = np.array_split(np.array(ranked, dtype=object), len(BANDS))
    return {band: list(part) for band, part in zip(BANDS, parts, strict=True) if len(part)}


def label_efficiency_figure(coll: Collection, dataset: str, styles: dict, out_dir: Path) -> FigureResult:
    """Macro AUROC vs fraction of training labels (log axis), one line per model, 95% CI as a band."""
    runs = [r for r in coll.runs if r.dataset == dataset]
    models = coll.models(runs)
    fractions = sorted({round(r.label_fraction, 9) for r in runs})
    synthetic = coll.is_synthetic([dataset])
    with paper_style():
        fig = Figure(figsize=(COLUMN_WIDTH, 2.4), layout="constrained")
        ax = fig.add_subplot()
        for model in models:
            cells = [coll.run(dataset, model, f) for f in fractions]
            cells = [result_cell(r.results, "auroc") if r else None for r in cells]
            xs = [f for f, c in zip(fractions, cells, strict=True) if c is not None and c.has_value]
            values = [c for c in cells if c is not None and c.has_value]
            if not values:
                continue
            style = styles[model]
            ax.plot(xs, [c.value for c in values], marker=style["marker"], color=style["color"], label=style["label"])
            ax.fill_between(
                xs, [c.low for c in values], [c.high for c in values], color=style["color"], alpha=0.12, linewidth=0
            )
        ax.set_xscale("log")
        ax.set_xticks(fractions, [fraction_name(f) for f in fractions])
        ax.minorticks_off()
        ax.set_xlabel("Training labels used")
        ax.set_ylabel("Macro AUROC (95% CI)")
        ax.set_title(f"{synthetic_prefix(synthetic)}{dataset_name(dataset)}: label efficiency", loc="left")
        fig.legend(loc="outside upper center", ncols=min(len(models), 2), handletextpad=0.3, columnspacing=0.8)
        stem = f"label_efficiency_{dataset}"
        paths = save_figure(fig, out_dir, stem)
    caption = (
        f"{synthetic_prefix(synthetic)}{dataset_name(dataset)}: macro AUROC on the test split of heads trained on "
        f"{', '.join(fraction_name(f) for f in fractions)} of the training labels; shaded: 95% bootstrap CI."
    )
    title = f"{synthetic_prefix(synthetic)}{dataset_name(dataset)}: label efficiency"
    return FigureResult(stem, caption, paths, title)


def _outputs(results: pd.DataFrame) -> list[str]:
    outputs = results.loc[results["metric"] == "auroc", "output"].astype(str)
    return [o for o in pd.unique(outputs) if o != MACRO]


def _prevalence(runs: list) -> dict[str, float]:
    """Test prevalence per output (results' 'prevalence' metric, else n_pos / n of its AUROC row)."""
    results = runs[0].results
    out = {}
    for output in _outputs(results):
        cell = result_cell(results, "prevalence", output)
        if not cell.has_value:
            row = results[(results["metric"] == "auroc") & (results["output"] == output)]
            n = float(row["n"].iloc[0]) if len(row) else 0.0
            cell = Cell(float(row["n_pos"].iloc[0]) / n if n else math.nan)
        out[output] = cell.value
    return out


def _finding_label(finding: str, prevalence: float) -> str:
    if math.isnan(prevalence):
        return f"{finding} (n/a)"
    return f"{finding} ({prevalence * 100:.1f}%)" if prevalence >= 0.001 else f"{finding} (<0.1%)"


def _band_label(band: str, findings: list[str], prevalence: dict[str, float]) -> str:
    values = [prevalence[f] * 100 for f in findings]
    return f"{band}\n{min(values):.2g}–{max(values):.2g}%\n({len(findings)} findings)"
