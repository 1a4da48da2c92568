"""The report's segmentation pieces: the Dice table and the contour figure.

Table (one per segmentation data set): one row per model (backbone x head), the prior row first and the
planted-truth oracle (synthetic data) last, one column per structure: "Dice (95% CI)" at the mask's resolution
within the crop the model saw (pipeline/segmentation/score.py), plus the mean over structures.

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
PRIOR_LABEL = "prior (training mean mask)"
ORACLE_LABEL = "oracle (planted truth)"
CEILING_LABEL = "ceiling (true masks at the heads' resolution)"


def dice_table(coll, dataset: str, n_resamples: int = 1000, seed: int = 0):
    """A segmentation data set's table: Dice (95% CI) per structure and over structures, the prior row first,
    every model (backbone x head) of the full-data runs, the oracle row last."""
    from pipeline.report.cells import Cell, Panel, ReportTable, Row, missing_cell
    from pipeline.report.collect import dataset_name, head_name

    runs = coll.full_runs(dataset)
    structures = _structures(coll, dataset, runs)
    columns = [*(s.replace("_", " ") for s in structures), "mean"]
    rows = []
    reference = _reference_summary(runs, n_resamples, seed)
    if "prior" in reference:
        rows.append(Row((PRIOR_LABEL,), [_cell(reference["prior"], s) for s in (*structures, MEAN)]))
    for model in coll.models(runs):
        run = next(r for r in runs if r.model == model)
        dice = run.results[run.results["metric"] == "dice"].set_index("output")
        cells = [
            Cell(float(dice.loc[s, "estimate"]), float(dice.loc[s, "ci_low"]), float(dice.loc[s, "ci_high"]))
            if s in dice.index else missing_cell()
            for s in (*structures, MEAN)
        ]  # fmt: skip
        rows.append(Row((f"{model[0]} · {head_name(model[1])}",), cells))  # e.g. "demo-dino · Decoder"
    for name in ("oracle", "ceiling"):
        if name in reference:
            label = ORACLE_LABEL if name == "oracle" else CEILING_LABEL
            rows.append(Row((label,), [_cell(reference[name], s) for s in (*structures, MEAN)]))
    synthetic = coll.is_synthetic([dataset])
    return ReportTable(
        name=f"segmentation_{dataset}",
        title=f"Segmentation: {dataset_name(dataset)}, Dice (95% CI)",
        caption=(
            "Dice per structure and its mean over structures on the test images, at the mask's resolution within "
            "the crop the model saw (probability >= 0.5), with a patient-level bootstrap 95% CI. Prior: the "
            "refit images' mean mask on the model's input, thresholded at 0.5, for every image. "
            + (
                "Oracle: the planted truth through the heads' output resolution (the ceiling of any head)."
                if synthetic
                else "Ceiling: the true masks through the heads' output resolution."
            )
        ),
        row_header=["Model"],
        columns=columns,
        panels=[Panel(None, rows)],
        synthetic=synthetic,
    )


def _structures(coll, dataset: str, runs) -> list[str]:
    card = coll.cards.get(dataset)
    if card is not None and card.segmentation_task is not None:
        return list(card.segmentation_task.structures)
    outputs = [o for r in runs for o in r.results["output"].astype(str) if o != MEAN]
    return list(dict.fromkeys(outputs))


def _reference_summary(runs, n_resamples: int, seed: int) -> dict[str, pd.DataFrame]:
    """reference -> summarise() rows of the first run holding reference.parquet (the prior and oracle rows are the
    same for every run of a data set on one store's crop)."""
    from pipeline.stats.segmentation import summarise
    from pipeline.tasks.segmentation import REFERENCE_FILE

    for run in runs:
        path = run.folder / REFERENCE_FILE
        if path.is_file():
            frame = pd.read_parquet(path)
            if "seed" in frame.columns and frame["seed"].nunique() > 1:
                frame = frame[frame["seed"] == frame["seed"].min()]
            return {
                str(name): summarise(group, n_resamples=n_resamples, seed=seed)
                for name, group in frame.groupby("reference", sort=False)
            }
    return {}


def _cell(summary: pd.DataFrame, structure: str):
    from pipeline.report.cells import Cell, missing_cell

    row = summary[(summary["structure"] == structure) & (summary["metric"] == "dice")]
    if not len(row):
        return missing_cell()
    return Cell(float(row["estimate"].iloc[0]), float(row["ci_low"].iloc[0]), float(row["ci_high"].iloc[0]))


def segmentation_figures(coll, task, out_dir: Path) -> tuple[list[FigureResult], list[str]]:
    """Per segmentation data set: the best model's (highest mean test Dice) predicted vs true contours on the first
    test images by id, drawn on the crop the model saw; (figures, what is missing: images or store not found)."""
    from pipeline.masks.workspace import read_structures
    from pipeline.report.collect import dataset_name, head_name
    from pipeline.report.source_image import ImageFinder, store_preprocessing
    from pipeline.segmentation.targets import store_preprocessing as as_preprocessing
    from pipeline.tasks.segmentation import MAPS_FILE, read_maps

    out, missing = [], []
    if coll.workspace is None:
        return out, ["no workspace: no segmentation contour figure (it needs the masks and the store's crop)"]
    for dataset in coll.datasets_of(task):
        runs = [r for r in coll.full_runs(dataset) if (r.folder / MAPS_FILE).is_file()]
        if not runs:
            continue
        best = max(runs, key=lambda r: task.headline(r.results))
        attrs = store_preprocessing(coll.workspace, best.backbone)
        if attrs is None:
            missing.append(f"no feature store {best.backbone} in the workspace: no contour figure of {dataset}")
            continue
        pre = as_preprocessing({"preprocessing": attrs})
        structures = _structures(coll, dataset, [best])
        maps = read_maps(pd.read_parquet(best.folder / MAPS_FILE), structures)
        finder = ImageFinder(coll.workspace, dataset, coll.image_roots)
        images, truths, preds, titles = [], [], [], []
        for image_id, pred in maps.items():
            pixels = finder.pixels(image_id)
            if pixels is None:
                continue
            images.append(pixels)
            truths.append(read_structures(coll.workspace.root, dataset, image_id, structures))
            preds.append(pred)
            titles.append(image_id)
        if not images:
            missing.append(f"no test image of {dataset} found ({', '.join(finder.searched)}): no contour figure")
            continue
        model = f"{best.backbone} · {head_name(best.head)}"
        caption = (f"{dataset_name(dataset)}: true (solid) and predicted (dashed, {model}) outlines on test images "
                   "as the model saw them (the store's crop/resize), probability 0.5.")  # fmt: skip
        out.append(contour_figure(images, truths, preds, pre, structures, titles, out_dir,
                                  f"segmentation_{dataset}", caption, coll.is_synthetic([dataset])))  # fmt: skip
    return out, missing


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
