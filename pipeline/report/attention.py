"""GLoRI attention maps: read a run's attention/ folder and overlay chosen findings' maps on their images."""

from __future__ import annotations

import logging
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.report.collect import Collection, Run, dataset_name, head_name
from pipeline.report.figures import COLUMN_WIDTH, FigureResult, paper_style, save_figure, synthetic_prefix
from pipeline.report.source_image import ImageFinder, crop_as_model_saw, store_preprocessing

log = logging.getLogger(__name__)

_ID_KEYS = ("image_id", "image_ids")
_OUTPUT_KEYS = ("outputs", "output", "output_names", "names", "findings")
_MAP_KEYS = ("maps", "attention", "attn")


@dataclass(frozen=True)
class AttentionMaps:
    """maps[i, k] is the (grid_h, grid_w) attention of output `outputs[k]`'s query on image `image_ids[i]`."""

    image_ids: list[str]
    outputs: list[str]
    maps: np.ndarray


def load_attention(folder: Path, default_outputs: list[str] | None = None) -> AttentionMaps | None:
    """Every map under a run's attention/ folder, None when there is none.

    The probe writes `attention.npz` with image_id (N,), output (K,), attention (N, K, P) and grid (rows, cols);
    also read: (N, K, h, w) maps, and one npz per image (`<image_id>.npz` holding (K, h, w) or (K, P)).
    Flat maps take the file's grid, else a square one.
    """
    found: list[tuple[list[str], np.ndarray]] = []
    outputs: list[str] | None = None
    for path in sorted(Path(folder).glob("*.npz")):
        with np.load(path, allow_pickle=False) as data:
            maps = _first(data, _MAP_KEYS)
            if maps is None:
                continue
            names = _first(data, _OUTPUT_KEYS)
            if names is not None:
                outputs = [str(x) for x in np.atleast_1d(names)]
            stored_ids = _first(data, _ID_KEYS)
            grid = _first(data, ("grid",))
        if stored_ids is None or np.ndim(stored_ids) == 0:  # one image per file: (K, P) or (K, h, w)
            maps = maps[None]
            stored_ids = np.array([str(stored_ids) if stored_ids is not None else path.stem])
        if len(stored_ids) != len(maps):
            log.warning("%s: %d image ids for %d maps; skipped", path, len(stored_ids), len(maps))
            continue
        try:
            found.append(([str(x) for x in stored_ids], _grid_maps(maps.astype(np.float32), grid)))
        except ValueError as exc:
            log.warning("%s: %s; skipped", path, exc)
    if not found:
        return None
    shapes = {block.shape[1:] for _, block in found}
    if len(shapes) != 1:
        log.warning("attention maps in %s have different shapes %s; using the first", folder, shapes)
        found = [(i, b) for i, b in found if b.shape[1:] == found[0][1].shape[1:]]
    ids = [x for i, _ in found for x in i]
    blocks = [b for _, b in found]
    maps = np.concatenate(blocks)
    n_outputs = maps.shape[1]
    if outputs is None or len(outputs) != n_outputs:
        outputs = list(default_outputs or [])
        if len(outputs) != n_outputs:
            outputs = [f"output {k}" for k in range(n_outputs)]
    return AttentionMaps(ids, outputs, maps)


def attention_runs(coll: Collection) -> list[Run]:
    """GLoRI runs (full training set) that saved attention maps."""
    return [r for r in coll.runs if r.is_full and r.attention_dir is not None]


def attention_figure(
    coll: Collection, run: Run, out_dir: Path, findings: list[str] | None = None, max_panels: int = 4
) -> tuple[FigureResult, list[str]] | tuple[None, list[str]]:
    """Overlay the maps of `findings` (default: the most prevalent findings with maps) on their test images.

    Each panel shows the positive test image with the highest score for that finding. Returns the figure
    (None when no chosen finding has maps) and notes for the reader (unknown findings, missing images).
    """
    notes: list[str] = []
    predictions = run.predictions()
    default_outputs = list(pd.unique(predictions["output"].astype(str))) if predictions is not None else None
    maps = load_attention(run.attention_dir, default_outputs)
    where = f"{run.dataset} {run.backbone}/{head_name(run.model[1])}"
    if maps is None:
        return None, [f"no readable attention maps in {run.attention_dir}"]
    chosen = list(findings) if findings else _most_prevalent(run, maps.outputs, max_panels)
    unknown = [f for f in chosen if f not in maps.outputs]
    if unknown:
        notes.append(
            f"{where}: no attention maps for {', '.join(unknown)} (maps exist for: "
            f"{', '.join(maps.outputs[:8])}{'...' if len(maps.outputs) > 8 else ''})"
        )
    chosen = [f for f in chosen if f in maps.outputs][:max_panels]
    if not chosen:
        return None, notes
    finder = ImageFinder(coll.workspace, run.dataset, getattr(coll, "image_roots", None))
    preprocessing = store_preprocessing(coll.workspace, run.backbone)
    drawn = {"image": 0, "cropped": 0}
    panels = [(f, *_pick_image(predictions, maps, f)) for f in chosen]

    n_cols = 2 if len(panels) > 1 else 1
    n_rows = math.ceil(len(panels) / n_cols)
    synthetic = coll.is_synthetic([run.dataset])
    with paper_style():
        fig = Figure(figsize=(COLUMN_WIDTH, 0.35 + 1.85 * n_rows), layout="constrained")
        axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
        for ax, (finding, image_id, score, label) in zip(axes, panels, strict=False):
            attention = maps.maps[maps.image_ids.index(image_id), maps.outputs.index(finding)]
            pixels = finder.pixels(image_id)
            if pixels is None:
                searched = ", ".join(finder.searched) or "no image root or shards"
                notes.append(
                    f"{where}: test image {image_id} not found (searched {searched}); its map is drawn alone. "
                    "Point `chex report --image-root DIR` at the images"
                )
            else:
                pixels, cropped = crop_as_model_saw(pixels, preprocessing)  # the map covers only this region
                drawn["image"] += 1
                drawn["cropped"] += cropped
            overlay(ax, pixels, attention)
            detail = "" if score is None else f"score {score:.2f}" + ("" if label is None else f", label {label:g}")
            ax.set_title("\n".join([textwrap.shorten(finding, 28), detail]).strip(), fontsize=6.5)
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        fig.suptitle(
            f"{synthetic_prefix(synthetic)}{dataset_name(run.dataset)}: GLoRI attention ({run.backbone})",
            fontsize=7.5,
            x=0.02,
            ha="left",
        )
        stem = f"attention_{run.dataset}_{run.backbone}"
        paths = save_figure(fig, out_dir, stem)
    if drawn["image"] == 0:
        shown = "shown alone (the test images were not found)"
    elif drawn["cropped"] == drawn["image"]:
        shown = "overlaid on the region of the test image the model saw (the centred square of the short side)"
    else:
        shown = "overlaid on the test image (preprocessing unknown: the map is stretched over the whole image)"
    caption = (
        f"{synthetic_prefix(synthetic)}GLoRI attention of each finding's query over the patch grid "
        f"({maps.maps.shape[2]}x{maps.maps.shape[3]}), upsampled and {shown}, for the test image with the "
        f"highest predicted score among positives ({dataset_name(run.dataset)}, backbone {run.backbone}); each "
        "map is scaled to its own range (bright = most attended)."
    )
    title = f"{dataset_name(run.dataset)}: GLoRI attention maps ({run.backbone})"
    return FigureResult(stem, caption, paths, synthetic_prefix(synthetic) + title), notes


def _first(data, keys: tuple[str, ...]) -> np.ndarray | None:
    for key in keys:
        if key in data.files:
            return data[key]
    return None


def _grid_maps(maps: np.ndarray, grid: np.ndarray | None) -> np.ndarray:
    """(N, K, h, w) from (N, K, h, w) or flat (N, K, P) maps, laid out on `grid` (rows, cols) or a square."""
    if maps.ndim == 4:
        return maps
    if grid is not None and maps.shape[-1] == int(np.prod(grid)):
        return maps.reshape(*maps.shape[:-1], *(int(g) for g in np.ravel(grid)))
    side = math.isqrt(maps.shape[-1])
    if maps.ndim == 3 and side * side == maps.shape[-1]:
        return maps.reshape(*maps.shape[:-1], side, side)
    raise ValueError(f"attention maps of shape {maps.shape} are neither (n, k, h, w) nor (n, k, P) with a grid")


def _most_prevalent(run: Run, outputs: list[str], n: int) -> list[str]:
    rows = run.results[(run.results["metric"] == "prevalence") & run.results["output"].isin(outputs)]
    ranked = list(rows.sort_values("estimate", ascending=False)["output"].astype(str))
    return (ranked + [o for o in outputs if o not in ranked])[:n]


def _pick_image(predictions: pd.DataFrame | None, maps: AttentionMaps, finding: str):
    """(image_id, score, label): the highest-scored positive test image that has a map, else the first map."""
    if predictions is not None:
        rows = predictions[
            (predictions["output"].astype(str) == finding) & predictions["image_id"].isin(maps.image_ids)
        ]
        if "split" in rows.columns and (rows["split"] == "test").any():
            rows = rows[rows["split"] == "test"]
        positives = rows[rows["label"] == 1]
        rows = positives if len(positives) else rows
        if len(rows):
            best = rows.sort_values("score", ascending=False).iloc[0]
            label = None if pd.isna(best["label"]) else float(best["label"])
            return str(best["image_id"]), float(best["score"]), label
    return maps.image_ids[0], None, None


def overlay(ax, pixels: np.ndarray | None, attention: np.ndarray) -> None:
    span = float(attention.max() - attention.min())
    scaled = (attention - attention.min()) / span if span > 0 else np.zeros_like(attention)
    if pixels is not None:
        h, w = pixels.shape
        low, high = np.percentile(pixels, [1, 99])
        ax.imshow(pixels, cmap="gray", vmin=low, vmax=high if high > low else low + 1, extent=(0, w, h, 0))
        # Opacity follows attention, so unattended regions show the radiograph itself.
        ax.imshow(scaled, cmap="inferno", alpha=0.1 + 0.55 * scaled, extent=(0, w, h, 0), interpolation="bilinear")
    else:
        ax.imshow(scaled, cmap="inferno", interpolation="bilinear")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
