"""Training a stack of heads (one per lr) side by side, predicting with it, and choosing the lr.

One feature batch feeds every lr's head in one batched pass (`heads.HeadStack`); AdamW has one param group
per lr, and a per-iteration cosine schedule (to 0, as DINOv2's linear eval) scales each group's lr. Training
is checkpointed after every epoch (`resume_path`), so a killed sweep resumes at its last finished epoch with
the same result it would have had (the epoch's shuffling and dropout are seeded by (seed, epoch)).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from heads import HeadStack
from pipeline.device import autocast
from pipeline.errors import ConfigError
from pipeline.probe.data import Features
from pipeline.progress import progress_bar
from pipeline.safe_load import load_tensors_or_refuse

if TYPE_CHECKING:
    from pipeline.tasks.base import Task

log = logging.getLogger(__name__)


def default_task() -> Task:
    """The classification task: what a stack trains for when no task is given (older callers, tests)."""
    from pipeline.tasks import task_named

    return task_named("classification")


@dataclass(frozen=True)
class TrainSpec:
    """How to train a stack: its lrs, epochs, batch size, weight decay and seed."""

    lrs: tuple[float, ...]
    epochs: int
    batch_size: int
    weight_decay: float = 1e-4
    seed: int = 0
    sample_views: bool = False
    micro_batch: int = 0  # > 0: each step's batch goes through the heads in pieces of this many images

    def __post_init__(self) -> None:
        if self.micro_batch and (self.micro_batch < 1 or self.batch_size % self.micro_batch):
            raise ConfigError(
                f"--micro-batch {self.micro_batch} must divide the batch size {self.batch_size}, so every step "
                "sees the same images as without micro-batching"
            )


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
    task: Task | None = None,
) -> HeadStack:
    """Train every member of `stack` on `positions` (indices into `labels`, the task's targets (N, ...), and the
    features' image list) with the task's loss (default: classification's masked BCE)."""
    trainer = StackTrainer(stack, features, positions, labels, spec, device, resume_path, resume_key, description,
                           task)  # fmt: skip
    trainer.train_until(spec.epochs, progress)
    return stack


class StackTrainer:
    """AdamW (one param group per member) + per-iteration cosine schedule over `spec.epochs`, trained in segments
    (`train_until`), checkpointed after every epoch with the stack's active members and a free-form `state`
    (successive halving keeps its rung decisions there), so a killed run resumes where it stopped."""

    def __init__(
        self,
        stack: HeadStack,
        features: Features,
        positions: np.ndarray,
        labels: np.ndarray,
        spec: TrainSpec,
        device: torch.device,
        resume_path: Path | None = None,
        resume_key: str = "",
        description: str = "train",
        task: Task | None = None,
    ) -> None:
        self.stack, self.features, self.positions, self.spec, self.device = stack, features, positions, spec, device
        self.task = task or default_task()
        self.resume_path, self.resume_key, self.description = resume_path, resume_key, description
        stack.to(device)
        # fused: one kernel over every tensor of a group (CPU and CUDA); the heads of a sweep are many small tensors.
        self.optimizer = torch.optim.AdamW(stack.param_groups(spec.lrs, spec.weight_decay), fused=True)
        self.steps_per_epoch = math.ceil(len(positions) / spec.batch_size)
        total = max(1, spec.epochs * self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=total)
        self.state: dict = {}
        self.epoch = _resume(resume_path, resume_key, stack, self.optimizer, self.scheduler, self.state)
        self.labels = torch.from_numpy(labels.astype(np.float32))
        # Per member: the loss of the first step (before any update) and the mean train loss of every epoch, kept
        # in the checkpoint so a resumed sweep judges divergence as an uninterrupted one would.
        n = len(stack.members)
        self.state.setdefault("loss_start", [math.nan] * n)
        self.state.setdefault("loss_epochs", [[] for _ in range(n)])

    @property
    def train_losses(self) -> TrainLosses:
        """Each member's first-step loss and per-epoch mean train loss so far."""
        return TrainLosses(list(self.state["loss_start"]), [list(e) for e in self.state["loss_epochs"]])

    def train_until(self, last_epoch: int, progress: bool = True) -> None:
        """Train the active members from the current epoch up to `last_epoch` (exclusive of none: epochs
        current .. last_epoch - 1), checkpointing after each."""
        spec, stack = self.spec, self.stack
        with progress_bar(self.description, spec.epochs * self.steps_per_epoch, progress) as advance:
            advance(self.epoch * self.steps_per_epoch)
            while self.epoch < min(last_epoch, spec.epochs):
                stack.train()
                torch.manual_seed(spec.seed * 100_003 + self.epoch)  # dropout masks: the same on a resumed run
                batches = self.features.batches(
                    self.positions, spec.micro_batch or spec.batch_size, shuffle=True,
                    seed=spec.seed * 1000 + self.epoch, sample_views=spec.sample_views,
                )  # fmt: skip
                per_step = spec.batch_size // spec.micro_batch if spec.micro_batch else 1
                total, n_steps = self._epoch(batches, per_step, advance)
                log.debug("%s epoch %d: mean loss per head %.4f", self.description, self.epoch, total / max(1, n_steps))
                self.epoch += 1
                self.checkpoint()

    def checkpoint(self) -> None:
        _checkpoint(self.resume_path, self.resume_key, self.epoch, self.stack, self.optimizer, self.scheduler,
                    self.state)  # fmt: skip

    def _epoch(self, batches, per_step: int, advance) -> tuple[float, int]:
        """One epoch of optimizer steps; with micro-batches, the gradients of `per_step` pieces are summed and
        divided by the step's number of known labels: the gradient of the whole batch's mean loss."""
        stack, optimizer, device = self.stack, self.optimizer, self.device
        total, n_steps, k, known, loss_sum = 0.0, 0, 0, 0, 0.0
        members = list(stack.active)
        member_sum, member_known = torch.zeros(len(members), dtype=torch.float64), 0
        first_step = self.epoch == 0
        for batch_pos, tokens in batches:
            target = self.labels[torch.from_numpy(batch_pos)].to(device)
            if k % per_step == 0:
                optimizer.zero_grad(set_to_none=True)
                known, loss_sum = 0, 0.0
                if per_step > 1:
                    stack.hold_fold()
            with autocast(device):
                logits = stack(*_inputs(tokens, stack.needs_patch, device))
            sums, n_known = self.task.member_loss_sums(logits.detach().float(), target, stack.label_smoothing)
            member_sum += sums
            member_known += n_known
            if first_step and k < per_step:  # the first step's batch, seen before any update: each member's start
                for m, i in enumerate(members):
                    start = self.state["loss_start"][i]
                    self.state["loss_start"][i] = (0.0 if math.isnan(start) else start) + float(sums[m])
                self.state.setdefault("start_known", 0)
                self.state["start_known"] += n_known
            if per_step == 1:
                loss = self.task.loss(logits.float(), target, stack.label_smoothing)
                loss.backward()
                loss_sum, known = float(loss.detach()), 1
            else:
                loss = self.task.loss(logits.float(), target, stack.label_smoothing, reduction="sum")
                loss.backward()
                loss_sum += float(loss.detach())
                known += self.task.n_known(target)
            k += 1
            if k % per_step == 0:
                total += self._step(per_step, known, loss_sum)
                n_steps += 1
                advance()
        if k % per_step:
            total += self._step(per_step, known, loss_sum)
            n_steps += 1
            advance()
        if first_step and self.state.get("start_known"):
            for i in members:
                self.state["loss_start"][i] /= self.state["start_known"]
            self.state["start_known"] = 0
        for m, i in enumerate(members):
            self.state["loss_epochs"][i].append(float(member_sum[m]) / max(1, member_known))
        return total, n_steps

    def _step(self, per_step: int, known: int, loss_sum: float) -> float:
        self.stack.release_fold()
        if per_step > 1 and known > 0:
            for group in self.optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.div_(known)
        self.optimizer.step()
        self.scheduler.step()
        return loss_sum / max(1, known) / len(self.stack.active)


@dataclass(frozen=True)
class TrainLosses:
    """Per member: `start`, the mean loss of the first step's batch before any update, and `epochs`, the mean
    train loss of each epoch it trained (a member stopped by successive halving has fewer)."""

    start: list[float]
    epochs: list[list[float]]

    def diverged(self) -> np.ndarray:
        """Members whose training diverged: a non-finite epoch loss; a first epoch whose mean loss is twice the first
        step's (it blew up at once); or a later epoch whose mean rose more than DIVERGENCE_MARGIN above the larger
        of the two (a spike that recovered by the end of the cosine schedule still counts). The start is one
        batch's loss, which scatters between members (0.57-1.09 for GLoRI on the demo's Shenzhen), so it is never
        the only reference."""
        out = np.zeros(len(self.start), dtype=bool)
        for i, (start, epochs) in enumerate(zip(self.start, self.epochs, strict=True)):
            if not epochs:
                continue
            values = np.asarray(epochs, dtype=np.float64)
            if not np.isfinite(values).all():
                out[i] = True
                continue
            start = float(start) if np.isfinite(start) else float(values[0])
            reference = max(start, float(values[0]))
            out[i] = values[0] > 2 * start or bool((values[1:] > (1 + DIVERGENCE_MARGIN) * reference).any())
        return out


DIVERGENCE_MARGIN = 0.25


def _member_loss_sums(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float) -> tuple[torch.Tensor, int]:
    """Each member's BCE summed over the batch's known labels (H,), and the number of known labels."""
    known = ~torch.isnan(target)
    y = torch.where(known, target, torch.zeros_like(target))
    if label_smoothing:
        y = y * (1.0 - label_smoothing) + 0.5 * label_smoothing
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y.expand_as(logits), reduction="none")
    return (loss * known).sum(dim=(1, 2)).double().cpu(), int(known.sum())


@torch.no_grad()
def predict_stack(
    stack: HeadStack,
    features: Features,
    positions: np.ndarray,
    batch_size: int,
    device: torch.device,
    task: Task | None = None,
) -> np.ndarray:
    """Scores (H, N, ...) of every active member for `positions` (view 0, in the order given): the task's
    activation of the logits (classification: probabilities (H, N, K))."""
    task = task or default_task()
    stack.eval().to(device)
    index = {int(p): k for k, p in enumerate(positions)}
    chunks: list[tuple[np.ndarray, np.ndarray]] = []
    stack.hold_fold()  # a projected store's basis is folded into the weights once, not per batch
    try:
        for batch_pos, tokens in features.batches(positions, batch_size, shuffle=False):
            with autocast(device):
                logits = stack(*_inputs(tokens, stack.needs_patch, device))
            chunks.append((batch_pos, task.activate(logits.float()).cpu().numpy()))
    finally:
        stack.release_fold()
    shape = chunks[0][1].shape[2:] if chunks else (0,)
    out = np.empty((len(stack.active), len(positions), *shape), dtype=np.float32)
    for batch_pos, probs in chunks:
        out[:, [index[int(p)] for p in batch_pos]] = probs
    return out


def macro_auroc(probs: np.ndarray, labels: np.ndarray, skip: Sequence[int] = ()) -> tuple[float, int]:
    """Mean AUROC over outputs with both classes among the known labels (and not in `skip`); (nan, 0) if none."""
    auroc, _, n_outputs = macro_auroc_se(probs, labels, skip, with_se=False)
    return auroc, n_outputs


def macro_auroc_se(
    probs: np.ndarray, labels: np.ndarray, skip: Sequence[int] = (), with_se: bool = True
) -> tuple[float, float, int]:
    """(macro AUROC, its standard error, outputs averaged) over outputs with both classes among the known labels.

    The SE is DeLong's per output (pipeline.stats.delong), combined as sqrt(sum of variances) / K, i.e. with the
    outputs taken as independent; NaN where an output has fewer than 2 positives or negatives."""
    from pipeline.stats.delong import auroc_variance

    values, variances = [], []
    for k in range(labels.shape[1]):
        known = ~np.isnan(labels[:, k])
        y = labels[known, k]
        if k in skip or len(np.unique(y)) < 2:
            continue
        values.append(roc_auc_score(y, probs[known, k]))
        if with_se:
            variances.append(auroc_variance(y, probs[known, k])[1])
    if not values:
        return float("nan"), float("nan"), 0
    se = float(np.sqrt(np.sum(variances)) / len(values)) if with_se else float("nan")
    return float(np.mean(values)), se, len(values)


def masked_bce_numpy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean BCE over known labels (the fallback selection criterion when no val AUROC is defined)."""
    known = ~np.isnan(labels)
    p = np.clip(probs[known], 1e-7, 1 - 1e-7)
    y = labels[known]
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if known.any() else float("nan")


SELECTIONS = ("auroc", "loss", "one-se")
DEFAULT_SELECTION = "auroc"
SELECTION_HELP = {
    "auroc": "the best val macro AUROC (the paper's rule)",
    "one-se": "the smallest lr whose val macro AUROC is within one DeLong standard error of the best",
    "loss": "the lowest val loss (mean BCE)",
}


def with_training_losses(table: pd.DataFrame, losses: TrainLosses | None) -> np.ndarray:
    """Add each lr's train_loss_start/_end and `diverged` (`TrainLosses.diverged`) to a sweep table, in place;
    returns `diverged` (all False without losses). Every task's sweep table carries these columns."""
    diverged = losses.diverged() if losses is not None else np.zeros(len(table), dtype=bool)
    table["train_loss_start"] = losses.start if losses is not None else np.nan
    table["train_loss_end"] = [e[-1] if e else np.nan for e in losses.epochs] if losses is not None else np.nan
    table["diverged"] = diverged
    return diverged


def sweep_table(
    lrs: Sequence[float],
    val_probs: np.ndarray,
    val_labels: np.ndarray,
    skip: Sequence[int],
    rule: str = DEFAULT_SELECTION,
    losses: TrainLosses | None = None,
) -> pd.DataFrame:
    """lr, val_macro_auroc, val_auroc_se, val_outputs, val_loss, train_loss_start/_end, diverged, chosen,
    selected_by. The lr is chosen by `rule` (SELECTION_HELP) among the lrs whose training did not diverge
    (`TrainLosses.diverged`); ties go to the smaller lr. When no output has both classes in val the rule falls back
    to the val loss, and when every lr diverged to all lrs; `selected_by` says which rule chose and why."""
    if rule not in SELECTIONS:
        raise ConfigError(f"--selection {rule!r}: must be one of {', '.join(SELECTIONS)}")
    rows = []
    for k, lr in enumerate(lrs):
        auroc, se, n_outputs = macro_auroc_se(val_probs[k], val_labels, skip, with_se=rule == "one-se")
        rows.append({"lr": float(lr), "val_macro_auroc": auroc, "val_auroc_se": se, "val_outputs": n_outputs,
                     "val_loss": masked_bce_numpy(val_probs[k], val_labels)})  # fmt: skip
    table = pd.DataFrame(rows)
    n = len(table)
    diverged = with_training_losses(table, losses)
    eligible = ~diverged
    notes = []
    if not eligible.any():
        eligible = np.ones(n, dtype=bool)
        notes.append("every lr diverged, so all were eligible")
    elif diverged.any():
        notes.append(f"diverged, not eligible: lr {', '.join(f'{lr:g}' for lr in table['lr'][diverged])}")
    if rule != "loss" and not table["val_macro_auroc"].notna().any():
        notes.append(f"val AUROC undefined: {val_class_counts(val_labels, skip)}; chosen on val loss instead")
        rule = "loss"
    best, selected_by = _choose(table, eligible, rule, notes)
    table["chosen"] = np.arange(n) == best
    table["selected_by"] = selected_by + (f" ({'; '.join(notes)})" if notes else "")
    return table


def pooled_sweep_table(tables: Sequence[pd.DataFrame], rule: str = DEFAULT_SELECTION) -> pd.DataFrame:
    """One lr for every seed (`--pooled-selection`): per lr, the mean over the seeds' sweep tables of the val
    macro AUROC, its SE and the val loss; an lr that diverged in any seed is not eligible (all are when every lr
    diverged somewhere); then `rule` chooses as in `sweep_table`. The SE is the seeds' mean SE, not SE/sqrt(N):
    the seeds share one val split (or overlapping ones), so their val scores are not independent. Returns
    lr, val_macro_auroc, val_auroc_se, val_loss, diverged_seeds, diverged, chosen, selected_by."""
    if rule not in SELECTIONS:
        raise ConfigError(f"--selection {rule!r}: must be one of {', '.join(SELECTIONS)}")
    lrs = [tuple(t["lr"].to_numpy(dtype=np.float64)) for t in tables]
    if not tables or any(lr != lrs[0] for lr in lrs):
        raise ValueError("pooled selection needs one sweep table per seed over the same lrs")
    stacked = pd.concat([t.assign(_seed=k) for k, t in enumerate(tables)], ignore_index=True)
    by_lr = stacked.groupby("lr", sort=False)
    table = pd.DataFrame({"lr": np.asarray(lrs[0])})
    for column in ("val_macro_auroc", "val_auroc_se", "val_loss"):
        table[column] = by_lr[column].mean().reindex(table["lr"]).to_numpy()  # NaN seeds left out
    table["diverged_seeds"] = by_lr["diverged"].sum().reindex(table["lr"]).to_numpy().astype(np.int64)
    table["diverged"] = table["diverged_seeds"] > 0
    eligible = ~table["diverged"].to_numpy()
    notes = [f"pooled over {len(tables)} seeds: mean val score per lr"]
    if not eligible.any():
        eligible = np.ones(len(table), dtype=bool)
        notes.append("every lr diverged in some seed, so all were eligible")
    elif not eligible.all():
        notes.append(f"diverged in some seed, not eligible: lr {', '.join(f'{lr:g}' for lr in table['lr'][~eligible])}")
    if rule != "loss" and not table["val_macro_auroc"].notna().any():
        notes.append("val AUROC undefined in every seed; chosen on val loss instead")
        rule = "loss"
    best, selected_by = _choose(table, eligible, rule, notes)
    table["chosen"] = np.arange(len(table)) == best
    table["selected_by"] = f"{selected_by} ({'; '.join(notes)})"
    return table


def rechoose(table: pd.DataFrame, rule: str, excluded: Sequence[float], why: str) -> pd.DataFrame | None:
    """`table` (a sweep table, per seed or pooled) with the lr `rule` chooses once the lrs `excluded` are not
    eligible either (the refit guard: a refit that diverged); None when no eligible lr is left."""
    diverged = table["diverged"].to_numpy(dtype=bool) if "diverged" in table else np.zeros(len(table), dtype=bool)
    eligible = ~diverged & ~table["lr"].isin(list(excluded)).to_numpy()
    if not eligible.any():
        return None
    notes: list[str] = []
    if rule != "loss" and not table["val_macro_auroc"].notna().any():
        rule = "loss"
    best, _ = _choose(table, eligible, rule, notes)
    out = table.copy()
    out["chosen"] = np.arange(len(out)) == best
    out["selected_by"] = out["selected_by"].astype(str) + f"; {why}"
    return out


def val_class_counts(labels: np.ndarray, skip: Sequence[int] = ()) -> str:
    """'val has P positives and N negatives' (one output), or per output for several (skipped ones left out)."""
    parts = []
    for k in range(labels.shape[1]):
        if k in skip:
            continue
        y = labels[~np.isnan(labels[:, k]), k]
        parts.append(f"{int((y == 1).sum())} positives and {int((y == 0).sum())} negatives")
    if len(parts) == 1:
        return f"val has {parts[0]}"
    return f"no output has both classes in val (per output: {'; '.join(parts)})"


def _choose(table: pd.DataFrame, eligible: np.ndarray, rule: str, notes: list[str]) -> tuple[int, str]:
    """Index of the chosen lr among `eligible` rows, and the criterion that chose it."""
    auroc = table["val_macro_auroc"].to_numpy(dtype=np.float64)
    loss = table["val_loss"].to_numpy(dtype=np.float64)
    order = np.argsort(table["lr"].to_numpy(), kind="stable")  # ties and the 1-SE rule go to the smaller lr
    if rule != "loss" and not np.isfinite(auroc[eligible]).any():
        notes.append("no eligible lr has a defined val AUROC; chosen on val loss instead")
        rule = "loss"
    if rule == "loss":
        score = np.where(eligible & np.isfinite(loss), -loss, -np.inf)
        return int(order[np.argmax(score[order])]), "val_loss"
    score = np.where(eligible & np.isfinite(auroc), auroc, -np.inf)
    best = int(order[np.argmax(score[order])])
    if rule == "auroc":
        return best, "val_macro_auroc"
    se = float(table["val_auroc_se"].iloc[best])
    if not np.isfinite(se):
        notes.append("the best lr's val AUROC has no standard error (fewer than 2 val positives or negatives)")
        return best, "val_macro_auroc"
    within = np.flatnonzero(score[order] >= auroc[best] - se)
    return int(order[within[0]]), f"val_macro_auroc, one-SE rule (best {auroc[best]:.4f}, SE {se:.4f})"


def _inputs(tokens: dict[str, torch.Tensor], needs_patch: bool, device: torch.device):
    cls = tokens["cls"].to(device, non_blocking=True)
    patch = tokens["patch"].to(device, non_blocking=True) if needs_patch else None
    return cls, patch


def _resume(path: Path | None, key: str, stack, optimizer, scheduler, extra: dict | None = None) -> int:
    if path is None or not path.is_file():
        return 0
    state = load_tensors_or_refuse(path, f"delete {path.parent} (or rerun with --force) to start the probe over")
    if not isinstance(state, dict) or state.get("key") != key:
        log.info("ignoring %s: it belongs to another probe configuration", path)
        return 0
    stack.load_state_dict(state["stack"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if "active" in state:
        stack.active = [int(i) for i in state["active"]]
    if extra is not None and "extra" in state:
        extra.update(json.loads(state["extra"]))
    log.info("resuming from %s at epoch %d", path, state["epoch"])
    return int(state["epoch"])


def _checkpoint(
    path: Path | None, key: str, epoch: int, stack, optimizer, scheduler, extra: dict | None = None
) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    state = {"key": key, "epoch": epoch, "stack": stack.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "active": list(stack.active),
             "extra": json.dumps(extra or {})}  # fmt: skip
    torch.save(state, tmp)
    tmp.replace(path)
