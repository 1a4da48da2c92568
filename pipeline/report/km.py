"""Kaplan-Meier figure: low vs high predicted risk with 95% bands, numbers at risk and the log-rank p."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.report.cells import format_p
from pipeline.report.collect import Collection, Run, dataset_name
from pipeline.report.figures import COLUMN_WIDTH, FigureResult, model_label, paper_style, save_figure, synthetic_prefix
from pipeline.report.tables import ENDPOINT_NAMES, is_oracle, result_cell
from pipeline.stats import KMGroups, kaplan_meier_groups, risk_groups

GROUP_COLORS = {"low": "#1f77b4", "high": "#d62728"}


def km_groups(survival: pd.DataFrame, endpoint: str) -> KMGroups:
    """KM curves of one endpoint's test subjects, grouped by `pipeline.stats.risk_groups` (the rule of
    `evaluate_survival`), so the figure's p equals the table's."""
    subjects, threshold, _ = risk_groups(survival, endpoint)
    time, event = subjects["time"].to_numpy(float), subjects["event"].to_numpy(float)
    ticks = _nice_ticks(float(time.max()))
    return kaplan_meier_groups(time, event, subjects["risk_score"].to_numpy(float), threshold=threshold, at_times=ticks)


def best_survival_run(coll: Collection, dataset: str, endpoint: str) -> Run | None:
    """The run with survival predictions whose low/high split exists (a defined log-rank p), highest C-index
    first; None when no run has both."""
    runs = [
        r
        for r in coll.full_runs(dataset)
        if r.survival_path is not None
        and not is_oracle(r.model)
        and result_cell(r.results, "logrank_p", endpoint, kind="pvalue").has_value
    ]
    if not runs:
        return None
    return max(runs, key=lambda r: np.nan_to_num(result_cell(r.results, "c_index", endpoint).value, nan=-1.0))


def km_figure(coll: Collection, run: Run, endpoint: str, out_dir: Path) -> FigureResult:
    """Two KM curves with 95% bands, the log-rank p on the plot and the numbers at risk under the axis."""
    groups = km_groups(run.survival(), endpoint)
    synthetic = coll.is_synthetic([run.dataset])
    name = ENDPOINT_NAMES.get(endpoint, endpoint.replace("_", " "))
    with paper_style():
        fig = Figure(figsize=(COLUMN_WIDTH, 3.0), layout="constrained")
        grid = fig.add_gridspec(2, 1, height_ratios=[4.0, 1.1])
        ax = fig.add_subplot(grid[0])
        table_ax = fig.add_subplot(grid[1], sharex=ax)
        for curve, label in ((groups.low, "Low risk"), (groups.high, "High risk")):
            color = GROUP_COLORS[curve.label]
            ax.step(
                curve.timeline,
                curve.survival,
                where="post",
                color=color,
                label=f"{label} (n={curve.n}, {curve.n_events} deaths)",
            )
            ax.fill_between(
                curve.timeline, curve.ci_lower, curve.ci_upper, step="post", color=color, alpha=0.15, linewidth=0
            )
        ax.text(0.03, 0.05, f"Log-rank p {_p_text(groups.logrank_p)}", transform=ax.transAxes, fontsize=7)
        ax.set_ylabel("Survival probability")
        low = min(float(np.nanmin(groups.low.ci_lower)), float(np.nanmin(groups.high.ci_lower)))
        ax.set_ylim(max(0.0, low - 0.05), 1.01)
        ax.set_xlim(0, groups.at_times[-1] * 1.02)
        ax.tick_params(labelbottom=False)
        ax.set_title(
            f"{synthetic_prefix(synthetic)}{dataset_name(run.dataset)}: {name}\n{model_label(run.model)}", loc="left"
        )
        fig.legend(loc="outside upper center", ncols=2, handlelength=1.2, columnspacing=1.0)
        _at_risk_table(table_ax, groups)
        stem = f"km_{run.dataset}_{endpoint}"
        paths = save_figure(fig, out_dir, stem)
    caption = (
        f"{synthetic_prefix(synthetic)}Kaplan-Meier curves of {name} in {dataset_name(run.dataset)} test "
        f"subjects split at the median predicted risk on test ({model_label(run.model)}, the model with the highest "
        "C-index), with 95% bands (exponential Greenwood); numbers at risk under the axis; log-rank p on the plot."
    )
    title = f"{dataset_name(run.dataset)}: Kaplan-Meier curves, {name}"
    return FigureResult(stem, caption, paths, synthetic_prefix(synthetic) + title)


def _at_risk_table(ax, groups: KMGroups) -> None:
    ax.set_ylim(-0.6, 1.6)
    for y, curve in ((1, groups.low), (0, groups.high)):
        for t, n in zip(curve.at_risk["time"], curve.at_risk["at_risk"], strict=True):
            ax.text(t, y, str(int(n)), ha="center", va="center", fontsize=6.5, color=GROUP_COLORS[curve.label])
    # Row names as tick labels, padded clear of the numbers centred on t = 0.
    ax.set_yticks([1, 0], ["Low risk", "High risk"])
    ax.tick_params(axis="y", length=0, pad=12)
    for tick, curve in zip(ax.get_yticklabels(), (groups.low, groups.high), strict=True):
        tick.set_color(GROUP_COLORS[curve.label])
    ax.set_title("Number at risk", loc="left", fontsize=6.5, pad=2)
    ax.spines[["left", "top", "right"]].set_visible(False)
    ax.set_xticks(groups.at_times, [f"{t:g}" for t in groups.at_times])
    ax.set_xlabel("Years of follow-up")


def _nice_ticks(t_max: float) -> np.ndarray:
    """0 and round steps (1, 2, 2.5, 5 x 10^k) up to the last follow-up, 4 to 7 of them."""
    for step in (0.5, 1, 2, 2.5, 3, 4, 5, 10, 20, 25, 50):
        if t_max / step <= 6:
            return np.arange(0, t_max + 1e-9, step)
    return np.linspace(0, t_max, 6)


def _p_text(p: float) -> str:
    text = format_p(p)
    return text.replace("<", "< ") if text.startswith("<") else f"= {text}"
