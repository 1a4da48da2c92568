"""iBOT masked-patch loss: the student predicts, at masked patch positions, the teacher's prototype scores of
the unmasked image (DINOv2's `iBOTPatchLoss.forward_masked`).

Each masked image weighs the same whatever its number of masked patches: a patch's cross-entropy is weighted
by 1 / (masked patches of its image) and the sum is divided by the number of images (masked or not).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from pipeline.pretrain.dino_loss import sinkhorn_knopp


class IBOTPatchLoss(nn.Module):
    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    @torch.no_grad()
    def softmax_center_teacher(self, teacher_patches: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        return F.softmax((teacher_patches.float() - self.center) / teacher_temp, dim=-1)

    @torch.no_grad()
    def sinkhorn_knopp_teacher(self, teacher_patches: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        n_masked = torch.tensor(float(teacher_patches.shape[0]), device=teacher_patches.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(n_masked)
        return sinkhorn_knopp(teacher_patches, teacher_temp, n_samples=n_masked)

    def forward(self, student_masked: torch.Tensor, teacher_probs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """`student_masked`, `teacher_probs`: (M, K) rows of the masked patches in `masks[masks]` order;
        `masks`: (n_images, n_patches) bool."""
        log_probs = F.log_softmax(student_masked.float() / self.student_temp, dim=-1)
        per_patch = (teacher_probs * log_probs).sum(dim=-1)
        per_image = masks.sum(dim=-1).clamp(min=1).float()
        weights = (1.0 / per_image).unsqueeze(-1).expand_as(masks)[masks]
        return -(per_patch * weights).sum() / masks.shape[0]

    @torch.no_grad()
    def update_center(self, teacher_patches: torch.Tensor) -> None:
        batch_sum = teacher_patches.float().sum(dim=0, keepdim=True)
        count = torch.tensor(float(teacher_patches.shape[0]), device=teacher_patches.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_sum)
            dist.all_reduce(count)
        mean = batch_sum / count.clamp(min=1)
        self.center.mul_(self.center_momentum).add_(mean, alpha=1 - self.center_momentum)
