import pytest

from pipeline.errors import ConfigError
from pipeline.pretrain.config import PretrainConfig, config_differences, load_config


def test_defaults_and_paper_preset_are_the_paper_recipe():
    for cfg in (PretrainConfig(), load_config("vitl16_chexfound")):
        assert (cfg.dino.loss_weight, cfg.ibot.loss_weight, cfg.dino.koleo_loss_weight) == (1.0, 3.0, 0.1)
        assert cfg.ibot.separate_head and cfg.ibot.mask_ratio_min_max == (0.1, 0.5)
        assert cfg.ibot.mask_sample_probability == 0.5
        assert (cfg.teacher.momentum_teacher, cfg.teacher.final_momentum_teacher) == (0.994, 1.0)
        assert (cfg.crops.global_crops_size, cfg.crops.local_crops_size, cfg.crops.local_crops_number) == (224, 96, 8)
        assert (cfg.optim.base_lr, cfg.optim.warmup_epochs) == (2e-4, 10)
    paper = load_config("vitl16_chexfound")
    assert paper.model.backbone == "vit_large_patch16_chexfound"
    sizes = {s: load_config("vitl16_chexfound", stage=s).crops for s in ("res336", "res448", "res512")}
    assert [(c.global_crops_size, c.local_crops_size) for c in sizes.values()] == [(336, 128), (448, 128), (512, 144)]


def test_cpu_preset_keeps_the_method_and_the_measured_cpu_settings():
    cpu, paper = load_config("cpu_small"), load_config("vitl16_chexfound")
    for section in ("ibot", "dino"):
        for key in ("loss_weight", "n_layers"):
            assert getattr(getattr(cpu, section), key) == getattr(getattr(paper, section), key)
    assert cpu.dino.koleo_loss_weight == paper.dino.koleo_loss_weight
    assert (cpu.ibot.mask_ratio_min_max, cpu.ibot.mask_sample_probability) == (paper.ibot.mask_ratio_min_max, 0.5)
    assert cpu.crops.local_crops_number == paper.crops.local_crops_number
    # The settings under which the synthetic-cohort run learns (docs/architecture.md "Pretraining at CPU scale"):
    # a teacher sharper than the student from step 0, few prototypes for 32 global crops a step, milder views.
    assert cpu.teacher.warmup_teacher_temp == cpu.teacher.teacher_temp == 0.04
    assert cpu.dino.n_prototypes <= 2 * 2 * cpu.train.batch_size_per_rank
    assert cpu.crops.global_crops_scale[0] > paper.crops.global_crops_scale[0]
    assert cpu.crops.solarize_prob == 0.0


def test_overrides_are_typed_and_validated():
    cfg = load_config("cpu_tiny", ["optim.base_lr=1e-3", "train.total_steps=12", "crops.global_crops_scale=[0.5,1]"])
    assert cfg.optim.base_lr == 1e-3 and cfg.total_steps == 12 and cfg.crops.global_crops_scale == (0.5, 1.0)
    with pytest.raises(ConfigError, match="unknown key"):
        load_config("cpu_tiny", ["optim.base_lrr=1"])
    with pytest.raises(ConfigError, match="must be a number"):
        load_config("cpu_tiny", ["optim.base_lr=fast"])
    with pytest.raises(ConfigError, match="one of"):
        load_config("cpu_tiny", ["teacher.centering=kmeans"])
    with pytest.raises(ConfigError, match="neither a file nor a preset"):
        load_config("no_such_preset")
    with pytest.raises(ConfigError, match="stage"):
        load_config("cpu_tiny", stage="res512")


def test_yaml_file_and_differences(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\noptim: {epochs: 3}\n")
    cfg = load_config(path)
    assert cfg.name == "mine" and cfg.optim.epochs == 3.0
    assert config_differences(cfg, load_config(path, ["train.max_steps=2"]), ignore=("train.max_steps",)) == []
    assert config_differences(cfg, load_config(path, ["optim.epochs=4"])) == ["optim.epochs"]
