"""KoLeo regulariser (Sablayrolles et al. 2019, as DINOv2's `KoLeoLoss`): spreads features uniformly by
penalising -log of each L2-normalised feature's distance to its nearest neighbour in the batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KoLeoLoss(nn.Module):
    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """-mean_i log ||x_i - x_nn(i)|| over the rows of `features` (B, D), B >= 2, after L2 normalisation."""
        with torch.autocast(device_type=features.device.type, enabled=False):
            x = F.normalize(features.float(), p=2, dim=-1, eps=self.eps)
            dots = x @ x.t()
            dots.fill_diagonal_(-1)  # never one's own neighbour
            neighbour = dots.argmax(dim=1)
            distances = F.pairwise_distance(x, x[neighbour], p=2, eps=self.eps)
            return -torch.log(distances + self.eps).mean()
