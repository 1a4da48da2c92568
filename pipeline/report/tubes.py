"""GLoRI attention of malpositioned tubes: does the query of an abnormal tube look at the tube's tip?

For a GLoRI run of a data set with RANZCR-style labels ("ETT - Abnormal", ...) that saved attention maps, each
abnormal finding's query map is overlaid on a test image whose planted tip is abnormal (label 1), with the tip
marked, and one measured line per finding: the share of the query's attention mass on patches whose centre lies
within `radius` patches of the tip, against the share those patches hold of the grid (what uniform attention
would give), over every such test image with a map. Tips come from the synthetic cohort's generator
(pipeline/synth/tips.py); real RANZCR images have no tip position, so no figure.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.report.attention import AttentionMaps, attention_runs, load_attention, overlay
from pipeline.report.collect import Collection, Run, dataset_name, head_name
from pipeline.report.figures import COLUMN_WIDTH, FigureResult, paper_style, save_figure, synthetic_prefix
from pipeline.report.source_image import ImageFinder, crop_as_model_saw, model_box, store_preprocessing

ABNORMAL = " - Abnormal"  # RANZCR CLiP's malposition labels (data_manifests/ranzcr.yaml)
RADIUS = 1.0  # patches: the tip's own patch and its four edge neighbours when the tip sits at a patch centre


@dataclass(frozen=True)
class TipAttention:
    """Attention mass near the planted tip of one abnormal finding, over its test images with maps."""

    finding: str
    n_images: int
    near: float  # mean share of the query's attention on patches within `radius` of the tip
    uniform: float  # mean share of the grid's patches within `radius` of the tip (uniform attention's share)
    radius_px: float  # the radius in pixels of the generated image

    def sentence(self) -> str:
        ratio = f", {self.near / self.uniform:.1f}x uniform" if self.uniform > 0 else ""
        return (
            f"{self.finding}: {100 * self.near:.0f}% of the query's attention lies within {self.radius_px:.0f} px "
            f"of the planted tip, against {100 * self.uniform:.0f}% for uniform attention{ratio} "
            f"({self.n_images} abnormal test image{'s' * (self.n_images != 1)})."
        )


def abnormal_findings(outputs: list[str]) -> list[str]:
    return [o for o in outputs if o.endswith(ABNORMAL)]


def tube_runs(coll: Collection) -> list[Run]:
    """GLoRI runs with attention maps on a synthetic data set whose outputs name malpositioned tubes."""
    return [
        r
        for r in attention_runs(coll)
        if coll.is_synthetic([r.dataset]) and abnormal_findings(list(r.results["output"].astype(str).unique()))
    ]


def tip_attention(maps: np.ndarray, tips: np.ndarray, box: tuple[int, int, int, int], radius: float = RADIUS):
    """(share of attention near the tip, share of patches near the tip) per image.

    maps (N, gh, gw) attention; tips (N, 2) as (column, row) pixel centres of the generated image; `box` (top,
    left, h, w) the square of that image the patch grid spans (pipeline/report/source_image.py `model_box`);
    `radius` in patches: a patch counts when its centre is within radius·patch side of the tip."""
    n, gh, gw = maps.shape
    top, left, h, w = box
    cell_h, cell_w = h / gh, w / gw
    centre_rows = top + (np.arange(gh) + 0.5) * cell_h  # continuous coordinates: pixel c spans [c, c + 1)
    centre_cols = left + (np.arange(gw) + 0.5) * cell_w
    mass = maps / np.clip(maps.sum(axis=(1, 2), keepdims=True), 1e-12, None)
    near, share = np.empty(n), np.empty(n)
    for i, (x, y) in enumerate(tips):
        dy = (centre_rows[:, None] - (y + 0.5)) / cell_h
        dx = (centre_cols[None, :] - (x + 0.5)) / cell_w
        close = dx**2 + dy**2 <= radius**2
        near[i], share[i] = float(mass[i][close].sum()), float(close.mean())
    return near, share


def tube_attention_figure(
    coll: Collection, run: Run, out_dir: Path, max_panels: int = 4
) -> tuple[FigureResult | None, list[str]]:
    """Abnormal tubes' GLoRI attention with the planted tip marked, and the measured share near the tip."""
    from pipeline.synth.tips import planted_tips

    where = f"{run.dataset} {run.backbone}/{head_name(run.model[1])}"
    predictions = run.predictions()
    outputs = list(pd.unique(predictions["output"].astype(str))) if predictions is not None else None
    maps = load_attention(run.attention_dir, outputs)
    findings = abnormal_findings(maps.outputs) if maps is not None else []
    if maps is None or not findings or predictions is None or coll.workspace is None:
        return None, [f"{where}: no attention maps of abnormal tubes with predictions to draw"]
    tips = planted_tips(coll.workspace, run.dataset, maps.image_ids)
    if tips.empty:
        return None, [
            f"{where}: no planted tube tip on any of the {len(maps.image_ids)} test images with maps (tips are known "
            f"for a data set `chex synth` generated in this workspace: manifests/{run.dataset}.synth.json)"
        ]
    tips = tips[tips["on_image"]]
    preprocessing = store_preprocessing(coll.workspace, run.backbone)
    measured, panels, notes = [], [], []
    for finding in findings:
        cases = _abnormal_cases(predictions, maps, tips, finding)
        if not len(cases):
            notes.append(
                f"{where}: none of the {len(maps.image_ids)} test images with attention maps has a planted "
                f"'{finding}' tip; rerun the probe with a larger --save-attention"
            )
            continue
        size = int(cases["image_size"].iloc[0])
        box = model_box(size, size, preprocessing) or (0, 0, size, size)
        stack = np.stack([maps.maps[maps.image_ids.index(i), maps.outputs.index(finding)] for i in cases["image_id"]])
        near, share = tip_attention(stack, cases[["x", "y"]].to_numpy(float), box)
        radius_px = RADIUS * box[2] / maps.maps.shape[2]
        measured.append(TipAttention(finding, len(cases), float(near.mean()), float(share.mean()), radius_px))
        best = int(np.argmax(cases["score"].to_numpy()))
        panels.append((finding, cases.iloc[best], stack[best], float(near[best]), float(share[best])))
    if not panels:
        return None, notes
    synthetic = coll.is_synthetic([run.dataset])
    finder = ImageFinder(coll.workspace, run.dataset, getattr(coll, "image_roots", None))
    n_cols = 2 if len(panels[:max_panels]) > 1 else 1
    n_rows = math.ceil(len(panels[:max_panels]) / n_cols)
    with paper_style():
        fig = Figure(figsize=(COLUMN_WIDTH, 0.35 + 1.95 * n_rows), layout="constrained")
        axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
        for ax, (finding, case, attention, near, share) in zip(axes, panels[:max_panels], strict=False):
            pixels = finder.pixels(str(case["image_id"]))
            size = int(case["image_size"])
            top, left, h, w = model_box(size, size, preprocessing) or (0, 0, size, size)
            if pixels is not None:
                pixels, _ = crop_as_model_saw(pixels, preprocessing)
                scale_y, scale_x = pixels.shape[0] / h, pixels.shape[1] / w
            else:
                notes.append(f"{where}: test image {case['image_id']} not found; its map is drawn alone")
                scale_y, scale_x = attention.shape[0] / h, attention.shape[1] / w
            overlay(ax, pixels, attention)
            tip_x, tip_y = (case["x"] + 0.5 - left) * scale_x, (case["y"] + 0.5 - top) * scale_y
            if pixels is None:  # imshow of the bare map puts cell centres at integers
                tip_x, tip_y = tip_x - 0.5, tip_y - 0.5
            ax.plot([tip_x], [tip_y], marker="o", ms=7, mfc="none", mec="cyan", mew=1.0)
            ax.plot([tip_x], [tip_y], marker="+", ms=5, color="cyan", mew=0.8)
            detail = f"score {case['score']:.2f}; {100 * near:.0f}% near tip (uniform {100 * share:.0f}%)"
            ax.set_title(f"{textwrap.shorten(finding, 28)}\n{detail}", fontsize=6.0)
        for ax in axes[len(panels[:max_panels]) :]:
            ax.set_visible(False)
        fig.suptitle(
            f"{synthetic_prefix(synthetic)}{dataset_name(run.dataset)}: attention at abnormal tips\n({run.backbone})",
            fontsize=7.5,
            x=0.02,
            ha="left",
        )
        stem = f"tube_tips_{run.dataset}_{run.backbone}"
        paths = save_figure(fig, out_dir, stem)
    caption = (
        f"{synthetic_prefix(synthetic)}GLoRI attention of each malposition finding's query over the patch grid "
        f"({maps.maps.shape[2]}x{maps.maps.shape[3]}) on the highest-scored test image whose planted tip is "
        "abnormal; the cyan ring marks the planted tip (from the generator). Near = patches whose centre lies "
        f"within {RADIUS:g} patch of the tip. " + " ".join(m.sentence() for m in measured)
    )
    title = f"{dataset_name(run.dataset)}: attention at abnormal tube tips ({run.backbone})"
    return FigureResult(stem, caption, paths, synthetic_prefix(synthetic) + title), notes


def _abnormal_cases(predictions: pd.DataFrame, maps: AttentionMaps, tips: pd.DataFrame, finding: str) -> pd.DataFrame:
    """Test images with a map, label 1 for `finding` and its planted tip on the image: image_id, score, x, y."""
    rows = predictions[(predictions["output"].astype(str) == finding) & (predictions["label"] == 1)]
    if "split" in rows.columns:
        rows = rows[rows["split"] == "test"]
    rows = rows[rows["image_id"].astype(str).isin(maps.image_ids)][["image_id", "score"]].astype({"image_id": str})
    mine = tips[tips["finding"] == finding][["image_id", "x", "y", "image_size"]]
    return rows.merge(mine, on="image_id").drop_duplicates("image_id").reset_index(drop=True)
