"""The report's segmentation pieces: the Dice table and the contour figure.

Table: one row per model (backbone x head), the prior row first and the planted-truth oracle (synthetic data)
last, one column per structure: "Dice (95% CI)" at the mask's resolution within the crop the model saw
(pipeline/segmentation/score.py), plus the mean over structures.

Figure: test images as the model saw them (the store's preprocessing applied to the pixels: the crop, pad or warp
of the eval view), with the true outline of each structure (solid) and the predicted one (dashed) at probability
0.5, one colour per structure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from pipeline.embed.preprocess import Preprocessing, to_unit_float
from pipeline.report.figures import COLUMN_WIDTH, FigureResult, paper_style, save_figure, synthetic_prefix

PRIOR = "prior"
ORACLE = "oracle"
MEAN = "mean"


def dice_table(summaries: pd.DataFrame, structures: Sequence[str]) -> pd.DataFrame:
    """`summaries`: rows of (backbone, head, structure, metric, estimate, ci_low, ci_high) as
    pipeline.stats.segmentation.summarise gives them per run, with head 'prior' / 'oracle' for those rows. ->
    one row per model, prior first, oracle last, columns Model and one "Dice (95% CI)" cell per structure + mean."""
    dice = summaries[summaries["metric"] == "dice"]
    models = list(dict.fromkeys(zip(dice["backbone"], dice["head"], strict=True)))
    models.sort(key=lambda m: (m[1] != PRIOR, m[1] == ORACLE))
    rows = []
    for backbone, head in models:
        part = dice[(dice["backbone"] == backbone) & (dice["head"] == head)].set_index("structure")
        label = head if head in (PRIOR, ORACLE) else f"{backbone} · {head}"
        row = {"Model": label}
        for structure in (*structures, MEAN):
            row[structure] = _cell(part.loc[structure]) if structure in part.index else "–"
        rows.append(row)
    return pd.DataFrame(rows)


def contour_figure(
    images: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    predictions: Sequence[torch.Tensor],
    pre: Preprocessing,
    structures: Sequence[str],
    titles: Sequence[str],
    out_dir: Path,
    stem: str,
    caption: str,
    synthetic: bool = False,
) -> FigureResult:
    """`images`: grey pixels; `truths`: (K, H, W) boolean masks of the same field of view; `predictions`: (K, T, T)
    probability maps (uint8 x 255) on the model's input square. Each panel shows the eval view's input square."""
    from pipeline.masks.align import to_input

    colors = matplotlib.colormaps["tab10"].colors
    n = len(images)
    cols = min(n, 4)
    rows = -(-n // cols) if n else 1
    with paper_style():
        fig = Figure(figsize=(COLUMN_WIDTH * 2, COLUMN_WIDTH * 2 / cols * rows + 0.3), layout="constrained")
        axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
        size = pre.image_size
        for ax, pixels, truth, pred, title in zip(axes, images, truths, predictions, titles, strict=False):
            view = pre.eval_view(to_unit_float(np.asarray(pixels)))[0].numpy()
            true_in = to_input(truth, pre).numpy()
            prob = torch.nn.functional.interpolate(
                pred.float()[None] / 255.0, size=(size, size), mode="bilinear", align_corners=False
            )[0].numpy()
            ax.imshow(view, cmap="gray", vmin=0.0, vmax=1.0, interpolation="bilinear")
            for k, _ in enumerate(structures):
                color = colors[k % len(colors)]
                if true_in[k].max() >= 0.5:
                    ax.contour(true_in[k], levels=[0.5], colors=[color], linewidths=0.8)
                if prob[k].max() >= 0.5:
                    ax.contour(prob[k], levels=[0.5], colors=[color], linewidths=0.8, linestyles="dashed")
            ax.set_title(title, fontsize=6)
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in axes[n:]:
            ax.set_axis_off()
        handles = [
            matplotlib.lines.Line2D([], [], color=colors[k % len(colors)], label=name.replace("_", " "))
            for k, name in enumerate(structures)
        ]
        handles += [
            matplotlib.lines.Line2D([], [], color="k", label="true"),
            matplotlib.lines.Line2D([], [], color="k", linestyle="dashed", label="predicted"),
        ]
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles))
        paths = save_figure(fig, out_dir, stem)
    return FigureResult(stem, synthetic_prefix(synthetic) + caption, paths)


def _cell(row: pd.Series) -> str:
    if pd.isna(row["ci_low"]) or pd.isna(row["ci_high"]):
        return f"{row['estimate']:.3f}"
    return f"{row['estimate']:.3f} ({row['ci_low']:.3f}–{row['ci_high']:.3f})"
