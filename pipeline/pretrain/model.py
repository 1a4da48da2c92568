"""Student and teacher networks (same timm ViT + DINO head + separate iBOT head) and the DINOv2 loss of a batch."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from pipeline.pretrain.config import PretrainConfig
from pipeline.pretrain.dino_loss import DINOLoss
from pipeline.pretrain.heads import DINOHead
from pipeline.pretrain.ibot_loss import IBOTPatchLoss
from pipeline.pretrain.koleo import KoLeoLoss


def vit_tokens(
    vit: VisionTransformer, images: torch.Tensor, masks: torch.Tensor | None = None, mask_token=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(CLS (B, D), patch tokens (B, P, D)) after the final norm; masked patches replaced by `mask_token`.

    The ViT must be built with `dynamic_img_size=True` so global and local crops share it (timm resamples the
    positional embedding to each crop's grid).
    """
    x = vit.patch_embed(images)  # (B, h, w, D)
    if masks is not None:
        x = torch.where(masks.view(x.shape[:3]).unsqueeze(-1), mask_token.to(x.dtype), x)
    x = vit._pos_embed(x)
    x = vit.patch_drop(x)
    x = vit.norm_pre(x)
    x = vit.blocks(x)
    x = vit.norm(x)
    return x[:, 0], x[:, vit.num_prefix_tokens :]


class Network(nn.Module):
    """A backbone with its projection heads; the student's also owns the iBOT mask token."""

    def __init__(self, backbone: VisionTransformer, config: PretrainConfig) -> None:
        super().__init__()
        dim = backbone.embed_dim
        d, i = config.dino, config.ibot
        self.backbone = backbone
        self.dino_head = DINOHead(dim, d.n_prototypes, d.n_layers, d.hidden_dim, d.bottleneck_dim)
        self.ibot_head = (
            DINOHead(dim, i.n_prototypes, i.n_layers, i.hidden_dim, i.bottleneck_dim) if i.separate_head else None
        )
        self.mask_token = nn.Parameter(torch.zeros(1, dim))

    def patch_head(self) -> DINOHead:
        return self.ibot_head if self.ibot_head is not None else self.dino_head

    def forward(
        self, global_crops: torch.Tensor, local_crops: torch.Tensor | None, masks: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Student pass (one call, so DDP sees every parameter used once): CLS tokens, head scores of all
        crops' CLS and of the masked global patches."""
        global_cls, global_patches = vit_tokens(self.backbone, global_crops, masks, self.mask_token)
        cls_tokens = [global_cls]
        if local_crops is not None:
            cls_tokens.append(vit_tokens(self.backbone, local_crops)[0])
        cls_scores = self.dino_head(torch.cat(cls_tokens))
        return {
            "global_cls": global_cls,
            "global_cls_scores": cls_scores[: len(global_cls)],
            "local_cls_scores": cls_scores[len(global_cls) :],
            "masked_patch_scores": self.patch_head()(global_patches[masks]),
        }

    @torch.no_grad()
    def teacher_scores(self, global_crops: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher pass on the unmasked global crops: (CLS scores (2B, K), masked patches' scores (M, K))."""
        cls, patches = vit_tokens(self.backbone, global_crops)
        return self.dino_head(cls), self.patch_head()(patches[masks])


@dataclass
class LossTerms:
    total: torch.Tensor
    dino_global: torch.Tensor
    dino_local: torch.Tensor
    ibot: torch.Tensor
    koleo: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {
            "loss": float(self.total),
            "dino_global": float(self.dino_global),
            "dino_local": float(self.dino_local),
            "ibot": float(self.ibot),
            "koleo": float(self.koleo),
        }


class Criterion(nn.Module):
    """DINO + iBOT + KoLeo with the weights and scales of DINOv2's SSLMetaArch (2 global crops)."""

    def __init__(self, config: PretrainConfig) -> None:
        super().__init__()
        t = config.teacher
        self.config = config
        self.dino = DINOLoss(config.dino.n_prototypes, t.student_temp, t.center_momentum)
        self.ibot = IBOTPatchLoss(config.ibot.n_prototypes, t.student_temp, t.center_momentum)
        self.koleo = KoLeoLoss()

    def forward(
        self,
        student: dict[str, torch.Tensor],
        teacher_cls: torch.Tensor,
        teacher_patches: torch.Tensor,
        masks: torch.Tensor,
        teacher_temp: float,
    ) -> LossTerms:
        n_global = 2
        n_local = self.config.crops.local_crops_number
        teacher_cls_probs, teacher_patch_probs = self._teacher_probs(teacher_cls, teacher_patches, teacher_temp)
        # Each student global crop is compared with the teacher's *other* global crop of the same image.
        swapped = torch.cat(teacher_cls_probs.chunk(n_global)[::-1])
        n_terms = n_global * (n_global - 1) + n_local * n_global
        dino_global = self.dino([student["global_cls_scores"]], [swapped]) * n_global / n_terms
        if n_local:
            dino_local = (
                self.dino(list(student["local_cls_scores"].chunk(n_local)), list(teacher_cls_probs.chunk(n_global)))
                / n_terms
            )
        else:
            dino_local = dino_global.new_zeros(())
        ibot = self.ibot(student["masked_patch_scores"], teacher_patch_probs, masks)
        koleo = sum(self.koleo(cls) for cls in student["global_cls"].chunk(n_global))
        total = (
            self.config.dino.loss_weight * (dino_global + dino_local)
            + self.config.ibot.loss_weight * ibot
            + self.config.dino.koleo_loss_weight * koleo
        )
        return LossTerms(total, dino_global, dino_local, ibot, koleo)

    @torch.no_grad()
    def _teacher_probs(
        self, cls: torch.Tensor, patches: torch.Tensor, temp: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.teacher.centering == "sinkhorn_knopp":
            return self.dino.sinkhorn_knopp_teacher(cls, temp), self.ibot.sinkhorn_knopp_teacher(patches, temp)
        cls_probs = self.dino.softmax_center_teacher(cls, temp)
        patch_probs = self.ibot.softmax_center_teacher(patches, temp)
        self.dino.update_center(cls)
        self.ibot.update_center(patches)
        return cls_probs, patch_probs


def make_teacher(student: Network) -> Network:
    """A copy of the student without drop path and without gradients (updated only by `ema_update`)."""
    teacher = copy.deepcopy(student)
    for module in teacher.modules():
        if type(module).__name__ == "DropPath":
            module.drop_prob = 0.0
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, parameter by parameter."""
    t_params = [p for _, p in sorted(teacher.named_parameters())]
    s_params = [p.detach() for _, p in sorted(student.named_parameters())]
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, s_params, alpha=1 - momentum)
