import copy

import pytest
import torch

from pipeline.backbone import load_backbone
from pipeline.pretrain import TrainingDivergedError, load_config, pretrain
from pipeline.pretrain.distributed import DistInfo
from pipeline.pretrain.model import Criterion, Network, ema_update, vit_tokens
from pipeline.pretrain.run_folder import read_metrics
from pipeline.pretrain.train import Trainer, param_groups


def _trainer(cfg, shards, out, resume=False, init_from=None):
    trainer = Trainer(cfg, shards, out, torch.device("cpu"), DistInfo())
    trainer.setup(resume=resume, init_from=init_from)
    return trainer


def test_ema_update_is_the_momentum_average():
    student = torch.nn.Linear(3, 2)
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        teacher.weight.fill_(1.0)
        student.weight.fill_(3.0)
    ema_update(teacher, student, momentum=0.75)
    assert torch.allclose(teacher.weight, torch.full((2, 3), 1.5))


def test_network_mask_token_replaces_masked_patches():
    cfg = load_config("cpu_tiny")
    from pipeline.backbone import build_backbone, preset

    vit = build_backbone(preset("vit_tiny_patch16", img_size=32, **cfg.model.backbone_overrides), dynamic_img_size=True)
    net = Network(vit, cfg).eval()
    torch.nn.init.normal_(net.mask_token)
    x = torch.randn(2, 3, 32, 32)
    masks = torch.zeros(2, 16, dtype=torch.bool)
    masks[0, 3] = True
    _, plain = vit_tokens(vit, x)
    _, masked = vit_tokens(vit, x, masks, net.mask_token)
    assert torch.equal(plain[1], masked[1]) and not torch.allclose(plain[0], masked[0])
    # the same patch content at a masked position no longer matters
    x2 = x.clone()
    x2[0, :, 0:8, 24:32] = 0  # patch 3 of the 4x4 grid
    _, masked2 = vit_tokens(vit, x2, masks, net.mask_token)
    assert torch.allclose(masked[0], masked2[0], atol=1e-6)
    assert vit_tokens(vit, torch.randn(2, 3, 16, 16))[1].shape == (2, 4, 32)  # local crops share the ViT


def test_param_groups_freeze_last_layer_and_skip_decay_on_biases():
    cfg = load_config("cpu_tiny")
    from pipeline.backbone import build_backbone, preset

    net = Network(build_backbone(preset("vit_tiny_patch16", img_size=32, **cfg.model.backbone_overrides)), cfg)
    groups = param_groups(net, layerwise_decay=0.5, patch_embed_lr_mult=0.2)
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(net.named_parameters())
    assert by_param[id(named["dino_head.last_layer.parametrizations.weight.original1"])]["is_last_layer"]
    assert by_param[id(named["backbone.blocks.0.attn.qkv.bias"])]["wd_mult"] == 0.0
    assert by_param[id(named["backbone.blocks.0.attn.qkv.weight"])]["lr_mult"] == pytest.approx(0.5**2)
    assert by_param[id(named["backbone.patch_embed.proj.weight"])]["lr_mult"] == pytest.approx(0.5**3 * 0.2)
    assert sum(len(g["params"]) for g in groups) == len(named)


def test_one_training_step_updates_student_and_teacher(toy_shards, tmp_path):
    cfg = load_config("cpu_tiny", ["optim.warmup_epochs=0", "optim.freeze_last_layer_epochs=0"])
    trainer = _trainer(cfg, toy_shards, tmp_path / "run")
    before_s = copy.deepcopy(trainer.student.state_dict())
    before_t = copy.deepcopy(trainer.teacher.state_dict())
    batch = next(iter(trainer._loader()))
    values = trainer.train_step(batch)
    assert all(torch.isfinite(torch.tensor(values[k])) for k in ("loss", "dino_global", "dino_local", "ibot", "koleo"))
    assert values["loss"] == pytest.approx(
        values["dino_global"] + values["dino_local"] + 3 * values["ibot"] + 0.1 * values["koleo"], rel=1e-5
    )
    key = "backbone.blocks.0.attn.qkv.weight"
    s_new, t_new = trainer.student.state_dict()[key], trainer.teacher.state_dict()[key]
    assert not torch.equal(s_new, before_s[key])
    m = values["momentum"]
    assert torch.allclose(t_new, m * before_t[key] + (1 - m) * s_new, atol=1e-7)
    assert trainer.student.mask_token.grad is not None and trainer.student.mask_token.grad.abs().sum() > 0


@pytest.mark.slow
def test_run_writes_a_chex_checkpoint_and_resumes_exactly(toy_shards, tmp_path):
    cfg = load_config("cpu_tiny")
    full = pretrain(cfg, toy_shards, tmp_path / "full", progress=False)
    assert (full / "model.pt").is_file() and (full / "step_000006").is_dir()
    _, bconfig, _ = load_backbone(full)
    assert bconfig.img_size == 32 and bconfig.embed_dim == 32
    # the same run split in two jobs at step 3 (as after a kill): identical losses and weights
    part = pretrain(load_config("cpu_tiny", ["train.max_steps=3"]), toy_shards, tmp_path / "split", progress=False)
    assert part.name == "step_000003" and not (tmp_path / "split" / "model.pt").exists()
    pretrain(cfg, toy_shards, tmp_path / "split", resume=True, progress=False)
    a, b = read_metrics(full / "metrics.jsonl"), read_metrics(tmp_path / "split" / "metrics.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert [r["lr"] for r in a] == [r["lr"] for r in b]
    wa = torch.load(full / "model.pt", weights_only=True)
    wb = torch.load(tmp_path / "split" / "model.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_refuses_to_overwrite_or_resume_with_another_recipe(toy_shards, tmp_path):
    from pipeline.errors import ConfigError

    pretrain(load_config("cpu_tiny", ["train.max_steps=3"]), toy_shards, tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="--resume"):
        pretrain(load_config("cpu_tiny"), toy_shards, tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match=r"optim\.base_lr"):
        pretrain(load_config("cpu_tiny", ["optim.base_lr=0.1"]), toy_shards, tmp_path / "run", resume=True)


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(toy_shards, tmp_path, monkeypatch):
    cfg = load_config("cpu_tiny", ["train.checkpoint_every=2"])
    forward = Criterion.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        terms = forward(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            terms.total = terms.total * float("nan")
        return terms

    monkeypatch.setattr(Criterion, "forward", poisoned)
    with pytest.raises(TrainingDivergedError, match=r"step 3 .*step_000002"):
        pretrain(cfg, toy_shards, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "step_000002" / "model.pt").is_file()
    assert not (tmp_path / "run" / "step_000003").exists() and not (tmp_path / "run" / "model.pt").exists()


def test_init_from_a_lower_resolution_interpolates_positional_embeddings(toy_shards, tmp_path):
    low = pretrain(load_config("cpu_tiny"), toy_shards, tmp_path / "low", progress=False)
    cfg = load_config("cpu_tiny", ["crops.global_crops_size=48", "crops.local_crops_size=24"])
    trainer = _trainer(cfg, toy_shards, tmp_path / "high", init_from=low)
    source = torch.load(low / "model.pt", weights_only=True)
    own = trainer.student.backbone.state_dict()
    assert own["pos_embed"].shape == (1, 36, 32) and source["pos_embed"].shape == (1, 16, 32)
    assert torch.equal(own["blocks.1.mlp.fc1.weight"], source["blocks.1.mlp.fc1.weight"])
    heads = torch.load(low / "heads.pt", weights_only=True)
    assert torch.equal(trainer.teacher.dino_head.mlp[0].weight, heads["dino_head"]["mlp.0.weight"])
    trainer.run(progress=False)
    assert load_backbone(tmp_path / "high")[1].img_size == 48
