"""Per-step schedules (DINOv2's CosineScheduler in closed form): lr, weight decay, teacher momentum and temperature."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.pretrain.config import PretrainConfig


def cosine_schedule(
    step: int,
    base: float,
    final: float,
    total_steps: int,
    warmup_steps: int = 0,
    start_warmup: float = 0.0,
    freeze_steps: int = 0,
) -> float:
    """0 for `freeze_steps`, then linear `start_warmup` -> `base` over `warmup_steps`, then cosine `base` -> `final`.

    Steps at or past `total_steps` give `final` (as DINOv2's scheduler indexing past its end).
    """
    if step >= total_steps:
        return final
    if step < freeze_steps:
        return 0.0
    step -= freeze_steps
    if step < warmup_steps:
        return start_warmup + (base - start_warmup) * step / warmup_steps
    step -= warmup_steps
    decay_steps = total_steps - freeze_steps - warmup_steps
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * step / decay_steps))


@dataclass(frozen=True)
class StepValues:
    lr: float
    last_layer_lr: float
    weight_decay: float
    momentum: float
    teacher_temp: float


class Schedules:
    """Every scheduled value of a run, for a step; epoch-valued options scale with the run's `steps_per_epoch`."""

    def __init__(self, config: PretrainConfig, world_size: int = 1) -> None:
        self.total = config.total_steps
        per_epoch = config.steps_per_epoch
        optim, teacher = config.optim, config.teacher
        self.peak_lr = config.lr(world_size)
        self.min_lr = optim.min_lr
        self.warmup = min(self.total, round(optim.warmup_epochs * per_epoch))
        self.freeze = min(self.total, round(optim.freeze_last_layer_epochs * per_epoch))
        self.wd = (optim.weight_decay, optim.weight_decay_end)
        self.momentum = (teacher.momentum_teacher, teacher.final_momentum_teacher)
        self.temp = (teacher.warmup_teacher_temp, teacher.teacher_temp)
        self.temp_warmup = round(teacher.warmup_teacher_temp_epochs * per_epoch)

    def at(self, step: int) -> StepValues:
        lr = cosine_schedule(step, self.peak_lr, self.min_lr, self.total, self.warmup)
        last_layer_lr = 0.0 if step < self.freeze else lr
        if self.temp_warmup > 0 and step < self.temp_warmup:
            temp = self.temp[0] + (self.temp[1] - self.temp[0]) * step / self.temp_warmup
        else:
            temp = self.temp[1]
        return StepValues(
            lr=lr,
            last_layer_lr=last_layer_lr,
            weight_decay=cosine_schedule(step, *self.wd, self.total),
            momentum=cosine_schedule(step, *self.momentum, self.total),
            teacher_temp=temp,
        )
