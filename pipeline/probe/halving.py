"""`--sweep halving`: successive halving over the sweep's learning rates.

All lrs start together in one stacked module, each on its own full-length cosine schedule. At fixed fractions
of the epochs (E/8, E/4, E/2 for 8-15 lrs: one rung per halving) every still-active lr is scored on the
validation split (macro AUROC, as the full sweep chooses; the val loss when no output has both classes) and
the worse half stops; the last one trains to the end and is the chosen lr. The refit on train + val follows
as usual. For 9 lrs and E epochs the sweep costs 9·E/8 + 4·E/8 + 2·E/4 + E/2 = 2.6·E head-epochs instead of
9·E. Rung decisions go into the sweep checkpoint, so a killed sweep resumes with the same survivors.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from heads import HeadStack
from pipeline.probe.data import Features
from pipeline.probe.sweep import (
    DEFAULT_SELECTION,
    StackTrainer,
    TrainSpec,
    default_task,
    macro_auroc,
    masked_bce_numpy,
    predict_stack,
)

if TYPE_CHECKING:
    from pipeline.tasks.base import Task

SWEEPS = ("full", "halving")


def rung_epochs(n_lrs: int, epochs: int) -> list[int]:
    """The epochs after which the worse half stops: E·2^-(m-r) for r = 0..m-1, m = floor(log2 n), at least 1."""
    m = n_lrs.bit_length() - 1  # floor(log2 n)
    return [min(epochs, max(1, round(epochs * 2.0 ** -(m - r)))) for r in range(m)]


def halving_sweep(
    stack: HeadStack,
    features: Features,
    train: np.ndarray,
    val: np.ndarray,
    labels: np.ndarray,
    skip: list[int],
    spec: TrainSpec,
    device: torch.device,
    eval_batch: int,
    resume_path: Path | None = None,
    resume_key: str = "",
    description: str = "sweep",
    progress: bool = True,
    rule: str = DEFAULT_SELECTION,
    task: Task | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Train `stack` (one member per lr of `spec`) by successive halving; returns the val probabilities of every
    survivor (H, N_val, K; NaN for the stopped ones) and the sweep table, whose `chosen` row is the survivor and
    where a stopped lr shows the val AUROC of the rung that stopped it. At each rung a member whose training has
    diverged so far ranks last; `rule` "loss" ranks by val loss, the others by the task's val score (classification:
    val macro AUROC)."""
    task = task or default_task()
    trainer = StackTrainer(stack, features, train, labels, spec, device, resume_path, resume_key, description, task)
    rungs: list[dict] = trainer.state.setdefault("rungs", [])
    n = len(spec.lrs)
    val_probs = np.full((n, len(val), *labels.shape[1:]), np.nan, dtype=np.float32)
    last_epoch = np.zeros(n, dtype=np.int64)
    val_labels = labels[val]
    for r, epoch in enumerate(rung_epochs(n, spec.epochs)):
        if r < len(rungs):
            continue  # decided before a kill: the checkpoint restored its survivors
        trainer.train_until(epoch, progress)
        active = list(stack.active)
        probs = predict_stack(stack, features, val, eval_batch, device, task)
        diverged = trainer.train_losses.diverged()
        scores = [task.rung_score(p, val_labels, skip, rule) - (np.inf if diverged[i] else 0)
                  for p, i in zip(probs, active, strict=True)]  # fmt: skip
        order = sorted(range(len(active)), key=lambda k: -scores[k])  # stable: ties keep the smaller lr
        keep = sorted(active[k] for k in order[: max(1, len(active) // 2)])
        rungs.append({"epoch": int(trainer.epoch), "active": active, "scores": [_finite(s) for s in scores],
                      "kept": keep})  # fmt: skip
        stack.active = keep
        trainer.checkpoint()
    trainer.train_until(spec.epochs, progress)
    for rung in rungs:
        for i in rung["active"]:
            last_epoch[i] = rung["epoch"]
    final = predict_stack(stack, features, val, eval_batch, device, task)
    for k, i in enumerate(stack.active):
        val_probs[i] = final[k]
        last_epoch[i] = spec.epochs
    table = _table(spec.lrs, val_probs, val_labels, skip, rungs, stack.active, last_epoch, rule, trainer, task)
    return val_probs, table


def _score(probs: np.ndarray, labels: np.ndarray, skip: list[int], rule: str = DEFAULT_SELECTION) -> float:
    auroc, n_outputs = macro_auroc(probs, labels, skip)
    if n_outputs and rule != "loss":
        return auroc
    return -masked_bce_numpy(probs, labels)


def _finite(score: float) -> float | None:
    return float(score) if np.isfinite(score) else None  # a diverged member's rung score (JSON has no -inf)


def _table(lrs, val_probs, val_labels, skip, rungs, survivors, last_epoch, rule, trainer, task) -> pd.DataFrame:
    """The sweep table; a stopped lr's val score (AUROC) is the one it had at the rung that stopped it."""
    rung_rule = "loss" if rule == "loss" else "auroc"  # what the rungs ranked by; the survivor is the choice
    table = task.sweep_table(lrs, np.nan_to_num(val_probs, nan=0.5), val_labels, skip, rung_rule,
                             trainer.train_losses)  # fmt: skip
    score_column = task.score_column
    by_auroc = table["selected_by"].iloc[0].startswith(score_column)
    for rung in rungs:
        for i, score in zip(rung["active"], rung["scores"], strict=True):
            if i not in rung["kept"]:
                score = np.nan if score is None else score
                table.loc[i, score_column] = score if by_auroc else np.nan
                table.loc[i, "val_loss"] = -score if not by_auroc else np.nan
    table["epochs_trained"] = last_epoch
    table["chosen"] = np.isin(np.arange(len(lrs)), survivors[:1])
    table["selected_by"] = table["selected_by"] + " (successive halving)"
    return table
