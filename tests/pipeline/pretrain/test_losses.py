import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.pretrain.config import load_config
from pipeline.pretrain.dino_loss import DINOLoss, sinkhorn_knopp
from pipeline.pretrain.ibot_loss import IBOTPatchLoss
from pipeline.pretrain.koleo import KoLeoLoss
from pipeline.pretrain.model import Criterion


def test_dino_loss_of_identical_distributions_is_their_entropy():
    torch.manual_seed(0)
    logits = torch.randn(5, 16)
    loss = DINOLoss(16, student_temp=0.1)
    teacher = F.softmax(logits / 0.1, dim=-1)
    entropy = -(teacher * teacher.log()).sum(-1).mean()
    assert loss([logits], [teacher]).item() == pytest.approx(entropy.item(), rel=1e-5)
    # cross-entropy >= entropy: any other student distribution scores worse
    assert loss([logits.flip(0)], [teacher]).item() > entropy.item()


def test_dino_loss_uniform_is_log_k_and_sums_over_pairs():
    loss = DINOLoss(8)
    uniform = torch.full((3, 8), 1 / 8)
    assert loss([torch.zeros(3, 8)], [uniform]).item() == pytest.approx(math.log(8))
    assert loss([torch.zeros(3, 8)] * 2, [uniform] * 3).item() == pytest.approx(6 * math.log(8))


def test_softmax_centering_subtracts_the_running_mean():
    loss = DINOLoss(4, center_momentum=0.9)
    scores = torch.tensor([[1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 1.0, 0.0]])
    probs = loss.softmax_center_teacher(scores, 1.0)  # centre still 0
    assert torch.allclose(probs, F.softmax(scores, dim=-1))
    loss.update_center(scores)
    assert torch.allclose(loss.center, 0.1 * scores.mean(0, keepdim=True))


def test_sinkhorn_knopp_balances_prototypes():
    torch.manual_seed(0)
    q = sinkhorn_knopp(torch.randn(64, 8) * 3, teacher_temp=1.0, n_iterations=50)
    assert torch.allclose(q.sum(1), torch.ones(64), atol=1e-4)
    assert torch.allclose(q.sum(0), torch.full((8,), 64 / 8), atol=1e-2)


def test_ibot_loss_weighs_each_masked_image_equally():
    loss = IBOTPatchLoss(4, student_temp=1.0)
    masks = torch.tensor([[True, True, False], [False, False, False], [False, True, False]])
    student = torch.tensor([[0.0, 0, 0, 0], [1.0, 0, 0, 0], [0.0, 2, 0, 0]])  # the 3 masked patches, in order
    teacher = torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0], [0.0, 1, 0, 0]])
    ce = -(teacher * F.log_softmax(student, -1)).sum(-1)
    expected = ((ce[0] + ce[1]) / 2 + ce[2]) / 3  # image means, divided by all 3 images
    assert loss(student, teacher, masks).item() == pytest.approx(expected.item(), rel=1e-6)


def test_koleo_on_points_of_a_square():
    # +-e1, +-e2: every nearest neighbour is at distance sqrt(2); scale must not matter (features are normalised).
    points = torch.tensor([[1.0, 0], [0, 1.0], [-1.0, 0], [0, -1.0]]) * torch.tensor([[1.0], [5.0], [0.5], [2.0]])
    assert KoLeoLoss()(points).item() == pytest.approx(-math.log(math.sqrt(2)), abs=1e-6)
    # crowding two points together raises the loss
    crowded = torch.tensor([[1.0, 0], [1.0, 0.01], [-1.0, 0], [0, -1.0]])
    assert KoLeoLoss()(crowded).item() > KoLeoLoss()(points).item()


def test_criterion_combines_terms_with_the_paper_weights():
    cfg = load_config("cpu_tiny")
    assert (cfg.dino.loss_weight, cfg.ibot.loss_weight, cfg.dino.koleo_loss_weight) == (1.0, 3.0, 0.1)
    k, b, n_local = cfg.dino.n_prototypes, 3, cfg.crops.local_crops_number
    torch.manual_seed(0)
    masks = torch.zeros(2 * b, 4, dtype=torch.bool)
    masks[0, :2] = True
    student = {
        "global_cls": torch.randn(2 * b, 8),
        "global_cls_scores": torch.randn(2 * b, k),
        "local_cls_scores": torch.randn(n_local * b, k),
        "masked_patch_scores": torch.randn(2, k),
    }
    teacher_cls, teacher_patches = torch.randn(2 * b, k), torch.randn(2, k)
    terms = Criterion(cfg)(student, teacher_cls, teacher_patches, masks, teacher_temp=0.05)
    expected = terms.dino_global + terms.dino_local + 3.0 * terms.ibot + 0.1 * terms.koleo
    assert terms.total.item() == pytest.approx(expected.item(), rel=1e-6)
    # global term: student crop 1 against teacher crop 2 and vice versa, over 2 + 2 * n_local pairs
    t = F.softmax(teacher_cls / 0.05, dim=-1)
    swapped = torch.cat([t[b:], t[:b]])
    ce = -(swapped * F.log_softmax(student["global_cls_scores"] / 0.1, -1)).sum(-1).mean()
    assert terms.dino_global.item() == pytest.approx((2 * ce / (2 + 2 * n_local)).item(), rel=1e-5)
