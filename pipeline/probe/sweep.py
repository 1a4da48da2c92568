"""Training a stack of heads (one per lr) side by side, predicting with it, and choosing the lr.

One feature batch feeds every lr's head in one batched pass (`heads.HeadStack`); AdamW has one param group
per lr, and a per-iteration cosine schedule (to 0, as DINOv2's linear eval) scales each group's lr. Training
is checkpointed after every epoch (`resume_path`), so a killed sweep resumes at its last finished epoch with
the same result it would have had (the epoch's shuffling and dropout are seeded by (seed, epoch)).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from heads import HeadStack, masked_bce
from pipeline.device import autocast
from pipeline.probe.data import Features
from pipeline.progress import progress_bar
from pipeline.safe_load import load_tensors_or_refuse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSpec:
    """How to train a stack: its lrs, epochs, batch size, weight decay and seed."""

    lrs: tuple[float, ...]
    epochs: int
    batch_size: int
    weight_decay: float = 1e-4
    seed: int = 0
    sample_views: bool = False


def train_stack(
    stack: HeadStack,
    features: Features,
    positions: np.ndarray,
    labels: np.ndarray,
    spec: TrainSpec,
    device: torch.device,
    resume_path: Path | None = None,
    resume_key: str = "",
    description: str = "train",
    progress: bool = True,
) -> HeadStack:
    """Train every member of `stack` on `positions` (indices into `labels` / the features' image list)."""
    stack.to(device)
    # fused: one kernel over every tensor of a group (CPU and CUDA); the heads of a sweep are many small tensors.
    optimizer = torch.optim.AdamW(stack.param_groups(spec.lrs, spec.weight_decay), fused=True)
    steps_per_epoch = math.ceil(len(positions) / spec.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, spec.epochs * steps_per_epoch))
    first_epoch = _resume(resume_path, resume_key, stack, optimizer, scheduler)
    label_tensor = torch.from_numpy(labels.astype(np.float32))
    with progress_bar(description, spec.epochs * steps_per_epoch, progress) as advance:
        advance(first_epoch * steps_per_epoch)
        for epoch in range(first_epoch, spec.epochs):
            stack.train()
            torch.manual_seed(spec.seed * 100_003 + epoch)  # dropout masks: the same on a resumed run
            total, n_batches = 0.0, 0
            batches = features.batches(
                positions, spec.batch_size, shuffle=True, seed=spec.seed * 1000 + epoch, sample_views=spec.sample_views
            )
            for batch_pos, tokens in batches:
                target = label_tensor[torch.from_numpy(batch_pos)].to(device)
                with autocast(device):
                    logits = stack(*_inputs(tokens, stack.needs_patch, device))
                loss = masked_bce(logits.float(), target, stack.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += float(loss.detach()) / len(stack)
                n_batches += 1
                advance()
            log.debug("%s epoch %d: mean loss per head %.4f", description, epoch, total / max(1, n_batches))
            _checkpoint(resume_path, resume_key, epoch + 1, stack, optimizer, scheduler)
    return stack


@torch.no_grad()
def predict_stack(
    stack: HeadStack, features: Features, positions: np.ndarray, batch_size: int, device: torch.device
) -> np.ndarray:
    """Probabilities (H, N, K) of every member for `positions` (view 0, in the order given)."""
    stack.eval().to(device)
    index = {int(p): k for k, p in enumerate(positions)}
    chunks: list[tuple[np.ndarray, np.ndarray]] = []
    for batch_pos, tokens in features.batches(positions, batch_size, shuffle=False):
        with autocast(device):
            logits = stack(*_inputs(tokens, stack.needs_patch, device))
        chunks.append((batch_pos, torch.sigmoid(logits.float()).cpu().numpy()))
    n_outputs = chunks[0][1].shape[-1] if chunks else 0
    out = np.empty((len(stack), len(positions), n_outputs), dtype=np.float32)
    for batch_pos, probs in chunks:
        out[:, [index[int(p)] for p in batch_pos]] = probs
    return out


def macro_auroc(probs: np.ndarray, labels: np.ndarray, skip: Sequence[int] = ()) -> tuple[float, int]:
    """Mean AUROC over outputs with both classes among the known labels (and not in `skip`); (nan, 0) if none."""
    values = []
    for k in range(labels.shape[1]):
        known = ~np.isnan(labels[:, k])
        y = labels[known, k]
        if k in skip or len(np.unique(y)) < 2:
            continue
        values.append(roc_auc_score(y, probs[known, k]))
    return (float(np.mean(values)), len(values)) if values else (float("nan"), 0)


def masked_bce_numpy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean BCE over known labels (the fallback selection criterion when no val AUROC is defined)."""
    known = ~np.isnan(labels)
    p = np.clip(probs[known], 1e-7, 1 - 1e-7)
    y = labels[known]
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if known.any() else float("nan")


def sweep_table(
    lrs: Sequence[float], val_probs: np.ndarray, val_labels: np.ndarray, skip: Sequence[int]
) -> pd.DataFrame:
    """lr, val_macro_auroc, val_outputs, val_loss, chosen. Chosen = best val macro AUROC (ties: smaller lr);
    if no output has both classes in val, the lowest val loss (the table's `selected_by` says which)."""
    rows = []
    for k, lr in enumerate(lrs):
        auroc, n_outputs = macro_auroc(val_probs[k], val_labels, skip)
        rows.append({"lr": float(lr), "val_macro_auroc": auroc, "val_outputs": n_outputs,
                     "val_loss": masked_bce_numpy(val_probs[k], val_labels)})  # fmt: skip
    table = pd.DataFrame(rows)
    if table["val_macro_auroc"].notna().any():
        best = int(table["val_macro_auroc"].fillna(-np.inf).to_numpy().argmax())
        table["selected_by"] = "val_macro_auroc"
    else:
        best = int(table["val_loss"].fillna(np.inf).to_numpy().argmin())
        table["selected_by"] = "val_loss"
    table["chosen"] = np.arange(len(table)) == best
    return table


def _inputs(tokens: dict[str, torch.Tensor], needs_patch: bool, device: torch.device):
    cls = tokens["cls"].to(device, non_blocking=True)
    patch = tokens["patch"].to(device, non_blocking=True) if needs_patch else None
    return cls, patch


def _resume(path: Path | None, key: str, stack, optimizer, scheduler) -> int:
    if path is None or not path.is_file():
        return 0
    state = load_tensors_or_refuse(path, f"delete {path.parent} (or rerun with --force) to start the probe over")
    if not isinstance(state, dict) or state.get("key") != key:
        log.info("ignoring %s: it belongs to another probe configuration", path)
        return 0
    stack.load_state_dict(state["stack"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    log.info("resuming from %s at epoch %d", path, state["epoch"])
    return int(state["epoch"])


def _checkpoint(path: Path | None, key: str, epoch: int, stack, optimizer, scheduler) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    state = {"key": key, "epoch": epoch, "stack": stack.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict()}  # fmt: skip
    torch.save(state, tmp)
    tmp.replace(path)
