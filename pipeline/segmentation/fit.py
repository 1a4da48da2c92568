"""Segmentation heads trained on cached patch tokens: an lr sweep scored by val Dice, then a refit on train+val.

Every lr trains a fresh head (seeded, so the sweep's head of an lr and the refit differ only in their images) on
view 0 of each image: the stored augmented views are random crops and flips whose masks would need their own
alignment, so the segmentation task leaves them out. Loss: per-structure BCE + soft Dice against the soft targets
(heads/segmentation.py). AdamW with a cosine schedule, as the classification probe. Selection: the mean over
val images and structures of the hard Dice (probability >= `threshold`) on the input square; an lr whose loss
went non-finite is never chosen. Features come from `pipeline.probe.data.Features` (full, projected or pooled
stores alike: the head reads the stored (L, P, D) patch rows on the store's grid, so a projected store's head
reads its R whitened coordinates as one block, and a pooled store's coarser grid gives coarser maps).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from heads.segmentation import SEGMENTATION_HEADS, segmentation_loss, upsample_logits
from pipeline.probe.data import Features

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitOptions:
    """How heads are trained and chosen."""

    lrs: tuple[float, ...]
    epochs: int
    batch_size: int
    weight_decay: float = 1e-4
    dice_weight: float = 1.0
    threshold: float = 0.5
    seed: int = 0


@dataclass
class SegmentationFit:
    """The sweep (lr, val_dice, train_loss, diverged, chosen), the chosen lr, the refitted head and the chosen lr's
    sweep head's val probabilities (uint8, (N_val, K, T, T))."""

    sweep: pd.DataFrame
    chosen_lr: float
    head: nn.Module
    val_probs: torch.Tensor
    seconds: dict[str, float] = field(default_factory=dict)


def fit_segmentation(
    features: Features,
    targets: torch.Tensor,
    train: np.ndarray,
    val: np.ndarray,
    refit: np.ndarray,
    head_name: str,
    head_options: dict,
    options: FitOptions,
) -> SegmentationFit:
    """Sweep `options.lrs` on `train`, choose by val Dice, refit on `refit` (train + val) with the chosen lr."""
    rows, val_maps = [], {}
    for lr in options.lrs:
        head, loss = train_head(head_name, head_options, features, targets, train, lr, options)
        diverged = not math.isfinite(loss)
        probs = predict(head, features, val, targets.shape[-1], options.batch_size)
        dice = float(input_dice(probs, targets[torch.as_tensor(val)], options.threshold).mean())
        rows.append({"lr": lr, "val_dice": dice, "train_loss": loss, "diverged": diverged})
        val_maps[lr] = probs
        log.info("segmentation %s lr %g: val Dice %.4f (train loss %.4f)", head_name, lr, dice, loss)
    sweep = pd.DataFrame(rows)
    eligible = sweep[~sweep["diverged"] & sweep["val_dice"].notna()]
    if eligible.empty:
        raise RuntimeError(f"every lr of the {head_name} sweep diverged: {list(options.lrs)}")
    chosen = float(eligible.sort_values(["val_dice", "lr"], ascending=[False, True]).iloc[0]["lr"])
    sweep["chosen"] = sweep["lr"] == chosen
    head, _ = train_head(head_name, head_options, features, targets, refit, chosen, options)
    return SegmentationFit(sweep, chosen, head, val_maps[chosen])


def build_head(head_name: str, head_options: dict, features: Features, n_structures: int) -> nn.Module:
    """A segmentation head sized for the store's patch rows (L blocks of D, or one block of R when projected)."""
    layout = features.store.layout
    return SEGMENTATION_HEADS[head_name](
        dim=layout.dim, n_layers=layout.n_layers, n_outputs=n_structures, grid=layout.grid, **head_options
    )


def train_head(
    head_name: str,
    head_options: dict,
    features: Features,
    targets: torch.Tensor,
    positions: np.ndarray,
    lr: float,
    options: FitOptions,
) -> tuple[nn.Module, float]:
    """A fresh seeded head trained on `positions`; (head, mean loss of the last epoch: inf when it diverged)."""
    torch.manual_seed(options.seed)
    head = build_head(head_name, head_options, features, targets.shape[1])
    size = (targets.shape[-2], targets.shape[-1])
    steps = options.epochs * math.ceil(len(positions) / options.batch_size)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=options.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
    head.train()
    last = float("nan")
    for epoch in range(options.epochs):
        total, count = 0.0, 0
        batches = features.batches(positions, options.batch_size, shuffle=True, seed=options.seed * 10_007 + epoch)
        for batch, tokens in batches:
            truth = targets[torch.as_tensor(batch)].float() / 255.0
            logits = upsample_logits(head(None, tokens["patch"]), size)
            loss = segmentation_loss(logits, truth, dice_weight=options.dice_weight)
            if not torch.isfinite(loss):
                return head.eval(), float("inf")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total, count = total + float(loss.detach()) * len(batch), count + len(batch)
        last = total / max(count, 1)
    return head.eval(), last


@torch.no_grad()
def predict(head: nn.Module, features: Features, positions: np.ndarray, size: int, batch_size: int) -> torch.Tensor:
    """(n, K, size, size) uint8 probabilities (x 255) of `positions`, in their order."""
    head.eval()
    out: torch.Tensor | None = None
    where = {int(p): k for k, p in enumerate(np.asarray(positions))}
    for batch, tokens in features.batches(np.asarray(positions), batch_size, shuffle=False):
        probs = torch.sigmoid(upsample_logits(head(None, tokens["patch"]), (size, size)))
        if out is None:
            out = torch.empty((len(positions), *probs.shape[1:]), dtype=torch.uint8)
        out[torch.as_tensor([where[int(p)] for p in batch])] = (probs * 255.0).round_().to(torch.uint8)
    assert out is not None, "predict needs at least one position"
    return out


def input_dice(probs: torch.Tensor, targets: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """(n, K) hard Dice on the input square of uint8 probabilities against uint8 soft targets (both >= 0.5 of 255
    count as inside); both empty scores 1."""
    pred = probs.float() >= threshold * 255.0
    true = targets.float() >= 127.5
    inter = (pred & true).sum(dim=(2, 3)).float()
    total = pred.sum(dim=(2, 3)).float() + true.sum(dim=(2, 3)).float()
    return torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total))
