"""Segmentation (card kind segmentation): K structures per image, masks aligned with the model's input, heads on the
patch tokens (seg_linear: DINOv2's linear protocol; seg_decoder: a small decoder; heads/segmentation.py).

Targets: each image's masks (the workspace's masks/<dataset>/, pipeline/masks/workspace.py) taken through the
store's recorded preprocessing onto the model's input square, as shares of each target pixel inside the structure,
(N, K, T, T) with T the input size, at most 4 pixels per stored patch (the decoder's output grid) and 128
(pipeline/segmentation/targets.py). Loss: per image and structure, the pixels' mean BCE plus 1 - soft Dice, with the
head's logits upsampled bilinearly to T. The lr is chosen on val Dice (hard, probability >= 0.5, on the input
square, mean over val images and structures); with `--selection loss` on the val loss. Tables: segmentation.parquet,
one row per test image and structure, scored at the mask's resolution on the mask pixels the crop covered
(pipeline/segmentation/score.py: intersection, predicted, true and scored pixel counts, Dice, IoU);
reference.parquet, the same for the prior (the refit images' mean target, >= 0.5) and the truth itself through the
input square at T (on synthetic data the planted-truth oracle; on real data the ceiling that T and the alignment
leave); segmentation_maps.parquet, the refit head's probabilities (uint8 x 255, on the head's grid) of the first few
test images by id, for the report's contour figure. Results: per structure and over structures, Dice and IoU with
their patient-level bootstrap 95% CI; compare: the paired permutation test of per-image scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from pipeline.tasks.base import Task

SCORES_FILE = "segmentation.parquet"
REFERENCE_FILE = "reference.parquet"
MAPS_FILE = "segmentation_maps.parquet"
FIGURE_IMAGES = 4
PROB_EPS = 1e-6


class SegmentationTask(Task):
    """Anatomy masks: (B, K, h, w) logits on the head's grid."""

    name = "segmentation"
    tables: ClassVar[dict[str, bool]] = {SCORES_FILE: True, REFERENCE_FILE: True, MAPS_FILE: False}
    score_column = "val_dice"
    score_name = "val Dice"
    headline_name = "mean Dice"
    has_figures = True
    report_heads = ("seg_linear", "seg_decoder")
    headline_metric = "dice"  # results.parquet's over-structures row is output "mean"
    wide_metrics = ("dice", "iou")
    head_output = "map"  # (B, K, h, w) logits on the head's grid (heads/segmentation.py)
    uses_train_views = False  # the stored augmented views are crops and flips the masks did not go through

    # --- data -------------------------------------------------------------------------------------------------
    def outputs(self, card) -> list[str]:
        task = card.segmentation_task
        return list(task.structures) if task is not None else []

    def targets(self, card, manifest: pd.DataFrame, store: Any = None) -> np.ndarray:
        from pipeline.errors import ConfigError
        from pipeline.segmentation.targets import aligned_targets, store_preprocessing, target_size

        if store is None:
            raise ConfigError(f"segmentation targets of {card.name!r} need the feature store's preprocessing")
        pre = store_preprocessing(store.attrs)
        root = store_workspace(store)
        targets = aligned_targets(root, card.name, manifest["image_id"].astype(str).tolist(), self.outputs(card),
                                  pre, target_size(pre, store.layout.grid))  # fmt: skip
        return targets.numpy().astype(np.float32) / 255.0

    # --- training ---------------------------------------------------------------------------------------------
    def loss(self, logits, targets, label_smoothing: float = 0.0, reduction: str = "mean") -> torch.Tensor:
        sums, n = self.member_loss_sums_grad(logits, targets)
        total = sums.sum()
        return total if reduction == "sum" else total / max(n, 1)

    def member_loss_sums_grad(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(H,) each head's loss summed over the batch's (image, structure) units, with gradients, and the units."""
        from heads.segmentation import upsample_logits

        up = upsample_logits(logits, tuple(targets.shape[-2:]))  # (H, B, K, T, T)
        y = targets.to(up.dtype).expand_as(up)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(up, y, reduction="none").mean(dim=(-2, -1))
        probs = torch.sigmoid(up)
        inter = (probs * y).sum(dim=(-2, -1))
        dice = (2 * inter + 1.0) / (probs.sum(dim=(-2, -1)) + y.sum(dim=(-2, -1)) + 1.0)
        per_unit = bce + (1.0 - dice)  # (H, B, K)
        return per_unit.sum(dim=(1, 2)), int(per_unit.shape[1] * per_unit.shape[2])

    def member_loss_sums(self, logits, targets, label_smoothing: float = 0.0) -> tuple[torch.Tensor, int]:
        with torch.no_grad():
            sums, n = self.member_loss_sums_grad(logits.float(), targets)
        return sums.double().cpu(), n

    def n_known(self, targets: torch.Tensor) -> int:
        return int(targets.shape[0] * targets.shape[1])

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    # --- lr selection -----------------------------------------------------------------------------------------
    def sweep_table(self, lrs, val_scores, val_targets, skip, rule, losses) -> pd.DataFrame:
        from pipeline.errors import ConfigError
        from pipeline.probe.sweep import SELECTIONS, with_training_losses

        if rule not in SELECTIONS:
            raise ConfigError(f"--selection {rule!r}: must be one of {', '.join(SELECTIONS)}")
        rows = []
        for k, lr in enumerate(lrs):
            dice, loss = val_dice_and_loss(val_scores[k], val_targets)
            rows.append({"lr": float(lr), "val_dice": dice, "val_loss": loss})
        table = pd.DataFrame(rows)
        n = len(table)
        diverged = with_training_losses(table, losses)
        eligible = ~diverged if (~diverged).any() else np.ones(n, dtype=bool)
        column, sign = ("val_loss", -1.0) if rule == "loss" else ("val_dice", 1.0)
        values = np.where(eligible, sign * table[column].to_numpy(dtype=np.float64), -np.inf)
        order = np.argsort(table["lr"].to_numpy(), kind="stable")  # ties go to the smaller lr
        best = int(order[np.argmax(values[order])])
        table["chosen"] = np.arange(n) == best
        notes = [f"diverged, not eligible: lr {', '.join(f'{lr:g}' for lr in table['lr'][diverged])}"] if (
            diverged.any() and eligible.sum() < n) else []  # fmt: skip
        by = "lowest val loss" if rule == "loss" else "best val Dice"
        table["selected_by"] = by + (f" ({'; '.join(notes)})" if notes else "")
        return table

    def rung_score(self, val_scores, val_targets, skip, rule) -> float:
        dice, loss = val_dice_and_loss(val_scores, val_targets)
        return -loss if rule == "loss" else dice

    # --- the run folder ---------------------------------------------------------------------------------------
    def pass_tables(self, data, test_scores, val_scores, identity, seed, lr, skipped, fold=-1, tagged=False):
        from pipeline.segmentation.score import score_maps
        from pipeline.segmentation.targets import prior_map

        root, pre = _context(data, identity)
        structures = list(data.outputs)
        test = data.test
        ids = data.manifest["image_id"].astype(str).to_numpy()[test]
        patients = data.manifest["patient_id"].astype(str).to_numpy()[test]
        name = data.card.name
        scores = score_maps(_as_logit_maps(test_scores), ids, patients, root, name, structures, pre, threshold=0.0)
        refit = np.concatenate([data.train, data.refit_val])
        targets = torch.from_numpy(np.asarray(data.labels))
        prior = prior_map((targets * 255.0).round().to(torch.uint8), refit)
        reference = pd.concat([
            score_maps(_as_logit_maps(prior), ids, patients, root, name, structures, pre, threshold=0.0)
            .assign(reference="prior"),
            score_maps(_as_logit_maps(targets[torch.as_tensor(test)]), ids, patients, root, name, structures, pre,
                       threshold=0.0).assign(reference="oracle" if data.card.synthetic else "ceiling"),
        ], ignore_index=True)  # fmt: skip
        out = {}
        shown = image_ids_for_figure(ids)
        maps = _maps_frame(test_scores, ids, shown, structures)
        for file, frame in ((SCORES_FILE, scores), (REFERENCE_FILE, reference), (MAPS_FILE, maps)):
            frame = frame.assign(**identity, lr=float(lr), seed=np.int64(seed))
            out[file] = frame.assign(fold=np.int64(fold)) if fold >= 0 else frame
        return out

    # --- statistics -------------------------------------------------------------------------------------------
    def evaluate(self, tables, record, config) -> pd.DataFrame:
        from pipeline.stats.segmentation import summarise
        from pipeline.stats.tables import RESULT_COLUMNS, RUN_COLUMNS

        scores = tables.get(SCORES_FILE)
        if scores is None or not len(scores):
            return pd.DataFrame(columns=list(RESULT_COLUMNS))
        rows = []
        passes = _passes(scores)
        for _, part in passes:
            summary = summarise(part, n_resamples=config.n_resamples, seed=config.seed)
            rows.append(summary)
        summary = pd.concat(rows).groupby(["structure", "metric"], sort=False).mean(numeric_only=True).reset_index()
        frame = pd.DataFrame({
            "output": summary["structure"].astype(str),
            "metric": summary["metric"].astype(str),
            "estimate": summary["estimate"],
            "ci_low": summary["ci_low"],
            "ci_high": summary["ci_high"],
            "n": summary["n_images"].round().astype("int64"),
            "n_pos": summary["n_patients"].round().astype("int64"),
            "defined": True,
            "note": "n = test images, n_pos = their patients; CI: patient-level bootstrap"
            + (f"; mean over {len(passes)} passes" if len(passes) > 1 else ""),
        })  # fmt: skip
        for column in RUN_COLUMNS:
            frame[column] = scores[column].iloc[0] if column in scores else None
        return frame[list(RESULT_COLUMNS)]

    def headline(self, results: pd.DataFrame) -> float:
        row = results[(results["output"] == "mean") & (results["metric"] == "dice")]
        return float(row["estimate"].iloc[0]) if len(row) else float("nan")

    def compare(self, run_a: Path, run_b: Path, config) -> pd.DataFrame:
        from pipeline.runs.io import read_table
        from pipeline.stats.multiple import adjust_pvalues
        from pipeline.stats.segmentation import paired_permutation
        from pipeline.tasks.base import COMPARE_COLUMNS

        frames = []
        for run in (run_a, run_b):
            path = Path(run) / SCORES_FILE if Path(run).is_dir() else Path(run)
            frame = read_table(path)
            frames.append(frame.assign(patient_id=frame["image_id"]) if config.by_image else frame)
        result = paired_permutation(frames[0], frames[1], n_permutations=config.n_permutations, seed=config.seed)
        result = result.rename(columns={"structure": "output"})
        result["p_adjusted"] = np.nan
        for _, rows in result.groupby("metric", sort=False):
            per_structure = rows.index[rows["output"] != "mean"]
            result.loc[per_structure, "p_adjusted"] = adjust_pvalues(
                result.loc[per_structure, "p_value"].to_numpy(), config.adjust
            )
        result["delong_p"] = np.nan
        result["model_a"], result["model_b"] = _model_name(frames[0], run_a), _model_name(frames[1], run_b)
        units, exact, min_p = result["n_units"], result["exact"], result["min_p"]
        result["note"] = [
            f"paired sign-flip permutation over {n} patients ({'exact' if e else 'sampled'}; smallest p {p:.2g}); "
            "per-image scores at the mask's resolution" + ("; not adjusted (the mean over structures)" if o == "mean"
                                                           else "")
            for n, e, p, o in zip(units, exact, min_p, result["output"], strict=True)
        ]  # fmt: skip
        return result[[*COMPARE_COLUMNS, "n_units", "min_p", "n_images"]]

    # --- report -----------------------------------------------------------------------------------------------
    def report_tables(self, coll, settings):
        from pipeline.report.segmentation import dice_table
        from pipeline.tasks.base import ReportPart

        datasets = coll.datasets_of(self)
        return ReportPart(tables=[dice_table(coll, d, settings.n_resamples, settings.seed) for d in datasets])

    def report_figures(self, coll, out_dir: Path, settings):
        from pipeline.report.segmentation import segmentation_figures
        from pipeline.tasks.base import ReportPart

        figures, missing = segmentation_figures(coll, self, out_dir)
        return ReportPart(figures=figures, missing=missing)


def val_dice_and_loss(val_probs: np.ndarray, val_targets: np.ndarray) -> tuple[float, float]:
    """Mean hard Dice (probability >= 0.5 after bilinear upsampling of the logits to the targets' size) and mean
    loss over val images and structures of one head's probabilities (N, K, h, w) against targets (N, K, T, T)."""
    from heads.segmentation import upsample_logits

    logits = _logits(torch.as_tensor(np.asarray(val_probs), dtype=torch.float32))
    target = torch.as_tensor(np.asarray(val_targets), dtype=torch.float32)
    dice_sum = loss_sum = 0.0
    for start in range(0, len(logits), 32):
        up = upsample_logits(logits[start : start + 32], tuple(target.shape[-2:]))
        y = target[start : start + 32]
        pred, true = up >= 0, y >= 0.5
        inter = (pred & true).sum(dim=(-2, -1)).double()
        total = pred.sum(dim=(-2, -1)).double() + true.sum(dim=(-2, -1)).double()
        dice_sum += float(torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total)).sum())
        bce = torch.nn.functional.binary_cross_entropy_with_logits(up, y, reduction="none").mean(dim=(-2, -1))
        probs = torch.sigmoid(up)
        soft = (2 * (probs * y).sum(dim=(-2, -1)) + 1) / (probs.sum(dim=(-2, -1)) + y.sum(dim=(-2, -1)) + 1)
        loss_sum += float((bce + 1 - soft).sum())
    units = max(1, logits.shape[0] * logits.shape[1])
    return dice_sum / units, loss_sum / units


def store_workspace(store) -> Path:
    """The workspace a probe's feature store lives in (`<workspace>/features/<backbone>`)."""
    return Path(store.path).resolve().parents[1]


def _context(data, identity: dict) -> tuple[Path, Any]:
    """(workspace root, the store's Preprocessing) of a probe pass."""
    from pipeline.segmentation.targets import store_preprocessing
    from pipeline.store import FeatureStore

    root = Path(data.root)
    store = FeatureStore.open(root / "features" / identity["backbone"])
    return root, store_preprocessing(store.attrs)


def _logits(probs: torch.Tensor) -> torch.Tensor:
    p = probs.float().clamp(PROB_EPS, 1 - PROB_EPS)
    return torch.log(p) - torch.log1p(-p)


def _as_logit_maps(probs) -> torch.Tensor:
    """Probabilities (any T) -> logits: sampled bilinearly and thresholded at 0, as the head's upsampled logits."""
    return _logits(torch.as_tensor(np.asarray(probs), dtype=torch.float32))


def _passes(scores: pd.DataFrame) -> list[tuple[Any, pd.DataFrame]]:
    keys = [c for c in ("seed", "fold") if c in scores.columns and scores[c].nunique() > 1]
    return list(scores.groupby(keys, sort=True)) if keys else [((), scores)]


def _model_name(scores: pd.DataFrame, run: Path) -> str:
    if {"backbone", "head"} <= set(scores.columns) and len(scores):
        return f"{scores['backbone'].iloc[0]} · {scores['head'].iloc[0]}"
    return Path(run).name


def _maps_frame(probs, ids: np.ndarray, shown: list[str], structures: list[str]) -> pd.DataFrame:
    """One row per shown image and structure: the probability map as uint8 bytes with its height and width."""
    probs = np.asarray(probs)
    where = {str(i): k for k, i in enumerate(ids)}
    rows = []
    for image_id in shown:
        for s, structure in enumerate(structures):
            grid = np.round(probs[where[image_id], s] * 255.0).astype(np.uint8)
            rows.append((image_id, structure, grid.shape[0], grid.shape[1], grid.tobytes()))
    return pd.DataFrame(rows, columns=["image_id", "structure", "height", "width", "probs"])


def read_maps(frame: pd.DataFrame, structures: Sequence[str]) -> dict[str, torch.Tensor]:
    """segmentation_maps.parquet -> image id -> (K, h, w) uint8 maps in `structures` order."""
    out: dict[str, torch.Tensor] = {}
    for image_id, group in frame.groupby("image_id", sort=True):
        by = {str(r.structure): r for r in group.itertuples()}
        maps = [np.frombuffer(by[s].probs, dtype=np.uint8).reshape(int(by[s].height), int(by[s].width))
                for s in structures]  # fmt: skip
        out[str(image_id)] = torch.from_numpy(np.stack(maps))
    return out


def image_ids_for_figure(ids: Sequence[str], n: int = FIGURE_IMAGES) -> list[str]:
    """The test images the contour figure shows: the first `n` in id order (the same for every run)."""
    return sorted(map(str, ids))[:n]
