"""HeadStack: H independent heads (one per learning rate) trained side by side on the same feature batch.

Each member is an ordinary head module with its own parameters, so AdamW gets one param group per member
(its own lr, its own cosine schedule) and the chosen member's `state_dict()` is a plain head checkpoint. The
forward pass stacks the members' parameters along a new leading dim (`torch.stack`: gradients flow back to
each member) and runs the head's `stacked_forward` once: one read of the features, one batched pass, (H, B, K).

On a projected store the members' full-width weights are folded through the basis (`Head.fold`) on every pass;
a micro-batched step, or a prediction pass, folds once instead (`hold_fold` ... `release_fold`); a step then
hands the summed gradient of the folded weights back to the full-width ones by the chain rule, once.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import torch
from torch import Tensor, nn

from heads.base import Head


class HeadStack(nn.Module):
    """`n` heads built by `factory()` (call order fixed, so a seeded RNG gives reproducible inits)."""

    def __init__(self, factory: Callable[[], Head], n: int) -> None:
        super().__init__()
        if n < 1:
            raise ValueError("a HeadStack needs at least one head")
        self.members = nn.ModuleList([factory() for _ in range(n)])
        self.active: list[int] = list(range(n))  # members that still train and predict (successive halving)
        self._step_folded: dict[str, Tensor] | None = None  # folded weights held by `hold_fold`

    def __len__(self) -> int:
        return len(self.members)

    @property
    def needs_patch(self) -> bool:
        return bool(self.members[0].needs_patch)

    @property
    def label_smoothing(self) -> float:
        return float(self.members[0].label_smoothing)

    def stacked_parameters(self) -> dict[str, Tensor]:
        """The active members' parameters stacked (H, ...), folded through a projected store's basis if any."""
        held = self._step_folded
        if held is not None:  # the full-width weights the held fold replaces are not stacked (9 x 12 MB at ViT-L)
            return self._stacked(skip=held.keys()) | held
        params = self._stacked()
        params.update(self.members[0].fold(params))
        return params

    def hold_fold(self) -> None:
        """Fold once and hold the result until `release_fold` (a micro-batched step, a prediction pass): the folded
        weights are leaves that the step's micro-batches accumulate gradients into (no-op without a basis)."""
        if not self.members[0].has_basis:
            return
        with torch.no_grad():
            folded = self.members[0].fold(self._stacked())
        self._step_folded = {name: t.detach().requires_grad_() for name, t in folded.items()}

    def release_fold(self) -> None:
        """Add the held folded weights' gradients, if any, to the members' full-width weights (chain rule through
        the fold: the gradient an unfolded pass gives) and drop them."""
        held, self._step_folded = self._step_folded, None
        if not held or all(t.grad is None for t in held.values()):
            return
        refolded = self.members[0].fold(self._stacked())
        names = [n for n, t in held.items() if t.grad is not None]
        torch.autograd.backward([refolded[n] for n in names], [held[n].grad for n in names])

    def _stacked(self, skip: Collection[str] = ()) -> dict[str, Tensor]:
        names = [name for name, _ in self.members[0].named_parameters() if name not in skip]
        per_member = [dict(self.members[i].named_parameters()) for i in self.active]
        return {name: torch.stack([params[name] for params in per_member]) for name in names}

    def forward(self, cls: Tensor, patch: Tensor | None = None) -> Tensor:
        """Logits (H, B, K) of every active member (all, unless some were stopped) on the same batch."""
        return self.members[0].stacked_forward(self.stacked_parameters(), cls, patch, self.training)

    def param_groups(self, lrs: Sequence[float], weight_decay: float) -> list[dict]:
        """AdamW param groups: member i trains with lrs[i]; frozen parameters (GLoRI queries) are left out."""
        if len(lrs) != len(self.members):
            raise ValueError(f"{len(lrs)} learning rates for {len(self.members)} heads")
        return [
            {
                "params": [p for p in member.parameters() if p.requires_grad],
                "lr": float(lr),
                "weight_decay": weight_decay,
            }
            for member, lr in zip(self.members, lrs, strict=True)
        ]


def masked_bce(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0, reduction: str = "mean") -> Tensor:
    """Sum over heads of each head's mean BCE over known labels: logits (H, B, K), labels (B, K), NaN = masked.

    Every head of the sweep gets the same mask (CheXFound masks only its first head's loss). Summing the
    per-head means gives each head exactly its own gradient, since the heads share no parameters.
    `reduction="sum"`: the sum over known labels instead of the mean (micro-batches divide once per step).
    """
    known = ~torch.isnan(labels)
    n_known = known.sum()
    if n_known == 0:
        return logits.sum() * 0.0
    target = torch.where(known, labels, torch.zeros_like(labels))
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + 0.5 * label_smoothing
    target = target.expand_as(logits)
    loss = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    total = (loss * known).sum()
    return total if reduction == "sum" else total / n_known
