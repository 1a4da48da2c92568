"""DINO [CLS] loss: cross-entropy between the teacher's centred, sharpened prototype scores and the student's.

As DINOv2's `DINOLoss`: the teacher is centred either by subtracting a running mean of its scores before the
softmax (`softmax_center_teacher`, then `update_center`) or by three Sinkhorn-Knopp iterations across the
global batch (`sinkhorn_knopp_teacher`). The loss sums over (student crop, teacher crop) pairs and averages
over the batch; the caller divides by the number of pairs.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class DINOLoss(nn.Module):
    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    @torch.no_grad()
    def softmax_center_teacher(self, teacher_output: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        return F.softmax((teacher_output.float() - self.center) / teacher_temp, dim=-1)

    @torch.no_grad()
    def sinkhorn_knopp_teacher(self, teacher_output: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        return sinkhorn_knopp(teacher_output, teacher_temp)

    def forward(self, student_outputs: list[torch.Tensor], teacher_probs: list[torch.Tensor]) -> torch.Tensor:
        """-sum over pairs of mean_b sum_k t[b, k] log softmax(s[b] / student_temp)[k]."""
        total = student_outputs[0].new_zeros(())
        for student in student_outputs:
            log_probs = F.log_softmax(student.float() / self.student_temp, dim=-1)
            for teacher in teacher_probs:
                total = total - (teacher * log_probs).sum(dim=-1).mean()
        return total

    @torch.no_grad()
    def update_center(self, teacher_output: torch.Tensor) -> None:
        """EMA of the teacher's mean score over the global batch (all ranks)."""
        batch_sum = teacher_output.float().sum(dim=0, keepdim=True)
        count = torch.tensor(float(teacher_output.shape[0]), device=teacher_output.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_sum)
            dist.all_reduce(count)
        self.center.mul_(self.center_momentum).add_(batch_sum / count, alpha=1 - self.center_momentum)


@torch.no_grad()
def sinkhorn_knopp(
    teacher_output: torch.Tensor, teacher_temp: float, n_iterations: int = 3, n_samples: torch.Tensor | None = None
) -> torch.Tensor:
    """Soft assignments (rows sum to 1) with prototypes used equally across the global batch (all ranks).

    `n_samples` is the global row count when ranks hold different numbers of rows (iBOT's masked patches).
    """
    distributed = dist.is_available() and dist.is_initialized()
    q = torch.exp(teacher_output.float() / teacher_temp).t()  # K x B
    if n_samples is None:
        n_samples = torch.tensor(float(q.shape[1]), device=q.device)
        if distributed:
            dist.all_reduce(n_samples)
    n_prototypes = q.shape[0]
    total = q.sum()
    if distributed:
        dist.all_reduce(total)
    q /= total
    for _ in range(n_iterations):
        rows = q.sum(dim=1, keepdim=True)
        if distributed:
            dist.all_reduce(rows)
        q /= rows
        q /= n_prototypes
        q /= q.sum(dim=0, keepdim=True)
        q /= n_samples
    q *= n_samples
    return q.t()
