"""The training loop: `pretrain(config, shard_dirs, out_dir)` runs DINOv2 self-distillation into a chex checkpoint.

One step: teacher scores of the global crops (no grad) -> student pass over global (masked) and local crops ->
DINO + iBOT + KoLeo loss -> backward (grad scaler under fp16) -> per-module gradient clipping -> AdamW with the
step's lr / weight decay (last layer frozen during the first epoch) -> EMA of the teacher. Runs the same under
`torchrun` (DDP; each rank streams its own slots of the shards).
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from timm.layers import DropPath
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pipeline.backbone import BackboneConfig, build_backbone, load_backbone, preset, save_checkpoint
from pipeline.device import autocast, autocast_dtype, pick_device
from pipeline.errors import ChexError, ConfigError, ShardError, disk_full_as_error
from pipeline.pretrain import run_folder
from pipeline.pretrain.augment import MultiCropAugmentation
from pipeline.pretrain.config import PretrainConfig, config_differences
from pipeline.pretrain.data import ShardStream, make_loader
from pipeline.pretrain.distributed import DistInfo, barrier, init_distributed, mean_across_ranks, shutdown
from pipeline.pretrain.model import Criterion, Network, ema_update, make_teacher
from pipeline.pretrain.schedules import Schedules
from pipeline.progress import make_progress

log = logging.getLogger(__name__)

# Options that may change between a run and its resumption without changing what is computed.
RESUMABLE_CHANGES = (
    "train.max_steps",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.log_every",
    "train.device",
)
LOSS_KEYS = ("loss", "dino_global", "dino_local", "ibot", "koleo")


class TrainingDivergedError(ChexError):
    """The loss became NaN or infinite; the run stopped without overwriting the last good checkpoint."""


def pretrain(
    config: PretrainConfig,
    shard_dirs: list[Path],
    out_dir: Path,
    resume: bool = False,
    init_from: Path | None = None,
    progress: bool = True,
) -> Path:
    """Train student/teacher ViTs on the shards in `shard_dirs`; returns `out_dir`, which then holds the final
    teacher backbone as a chex checkpoint (`model.pt` + `config.json`) that `chex embed` loads.

    `resume` continues the newest step checkpoint in `out_dir` (optimizer, schedules, EMA teacher, centres,
    RNG and data position); `init_from` starts from a checkpoint's backbone (and heads, when it has
    `heads.pt`) with positional embeddings interpolated to this run's global crop size.
    """
    out_dir = Path(out_dir)
    device = pick_device(config.train.device)
    dist_info = init_distributed(device.type)
    if device.type == "cuda" and dist_info.enabled:
        device = torch.device("cuda", dist_info.local_rank)
    try:
        trainer = Trainer(config, _list_shards(shard_dirs), out_dir, device, dist_info)
        trainer.setup(resume=resume, init_from=init_from)
        return trainer.run(progress=progress)
    finally:
        shutdown(dist_info)


@dataclass
class StepResult:
    values: dict[str, float]
    seconds: float


class Trainer:
    def __init__(
        self, config: PretrainConfig, shards: list[Path], out_dir: Path, device: torch.device, dist_info: DistInfo
    ) -> None:
        self.config = config
        self.shards = shards
        self.out_dir = out_dir
        self.device = device
        self.dist = dist_info
        self.schedules = Schedules(config, dist_info.world_size)
        self.amp_dtype = autocast_dtype(device)
        self.scaler = torch.amp.GradScaler(
            device.type, enabled=self.amp_dtype == torch.float16 and config.train.grad_scaler
        )
        self.step = 0

    # -- setup -------------------------------------------------------------------------------------------------

    def setup(self, resume: bool, init_from: Path | None) -> None:
        cfg = self.config
        self._check_out_dir(resume)
        torch.manual_seed(cfg.train.seed)  # identical initialisation on every rank
        random.seed(cfg.train.seed)
        self.backbone_config = self._backbone_config(init_from)
        backbone = build_backbone(self.backbone_config, drop_path_rate=cfg.model.drop_path_rate, dynamic_img_size=True)
        _uniform_drop_path(backbone, cfg.model.drop_path_rate)
        student = Network(backbone, cfg)
        if init_from is not None:
            self._load_init(student, init_from)
        self.student = student.to(self.device)
        self.teacher = make_teacher(self.student)
        self.criterion = Criterion(cfg).to(self.device)
        self.optimizer = torch.optim.AdamW(
            param_groups(self.student, cfg.optim.layerwise_decay, cfg.optim.patch_embed_lr_mult),
            betas=cfg.optim.betas,
        )
        state_dir = run_folder.latest_step_dir(self.out_dir) if resume else None
        if state_dir is not None:
            self._load_state(state_dir)
        elif resume:
            log.info("no step checkpoint in %s yet: starting from step 0", self.out_dir)
        torch.manual_seed(cfg.train.seed + 1000 * self.dist.rank + self.step)  # drop path differs across ranks
        if state_dir is not None:
            self._restore_rng(state_dir)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self.model = DistributedDataParallel(self.student, device_ids=device_ids) if self.dist.enabled else self.student
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            run_folder.write_config(self.out_dir, cfg.to_dict())
        self.metrics = (
            run_folder.MetricsLog(self.out_dir / run_folder.METRICS_FILE, resume_step=self.step if resume else None)
            if self.dist.is_main
            else None
        )

    def _check_out_dir(self, resume: bool) -> None:
        saved = self.out_dir / run_folder.CONFIG_YAML
        if not resume:
            if run_folder.step_dirs(self.out_dir) or (self.out_dir / "model.pt").exists():
                raise ConfigError(
                    f"{self.out_dir} already holds a pretraining run; pass --resume to continue it, "
                    "or choose another --out/--name"
                )
            return
        if saved.is_file():
            import yaml

            previous = PretrainConfig.from_dict(yaml.safe_load(saved.read_text()), str(saved))
            changed = config_differences(previous, self.config, ignore=RESUMABLE_CHANGES)
            if changed:
                raise ConfigError(
                    f"cannot resume {self.out_dir}: its run used a different recipe ({', '.join(changed[:8])}); "
                    f"rerun with the options of {saved}, or start a new run with another --out/--name"
                )

    def _backbone_config(self, init_from: Path | None) -> BackboneConfig:
        size = self.config.crops.global_crops_size
        if init_from is not None:
            _, loaded, _ = load_backbone(init_from, image_size=size)
            return loaded
        try:
            return preset(self.config.model.backbone, img_size=size, **self.config.model.backbone_overrides)
        except TypeError as exc:
            raise ConfigError(f"model.backbone_overrides: {exc}") from None

    def _load_init(self, student: Network, init_from: Path) -> None:
        source, _, sha = load_backbone(init_from, image_size=self.backbone_config.img_size)
        student.backbone.load_state_dict(source.state_dict())
        heads_file = Path(init_from) / run_folder.HEADS_FILE if Path(init_from).is_dir() else None
        if heads_file is not None and heads_file.is_file():
            heads = run_folder.load_tensors(heads_file)
            try:
                student.dino_head.load_state_dict(heads["dino_head"])
                if student.ibot_head is not None and "ibot_head" in heads:
                    student.ibot_head.load_state_dict(heads["ibot_head"])
            except RuntimeError as exc:
                raise ConfigError(
                    f"{heads_file} does not fit this run's heads (dino/ibot n_prototypes, dims): "
                    f"{str(exc).splitlines()[0]}"
                ) from None
            log.info("initialised backbone and heads from %s (sha256 %s)", init_from, sha[:12])
        else:
            log.info("initialised backbone from %s (sha256 %s); heads start fresh", init_from, sha[:12])

    def _load_state(self, state_dir: Path) -> None:
        state = run_folder.load_tensors(state_dir / run_folder.STATE_FILE)
        self.student.load_state_dict(state["student"])
        self.teacher.load_state_dict(state["teacher"])
        self.criterion.load_state_dict(state["criterion"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        log.info("resumed %s at step %d", state_dir, self.step)

    def _restore_rng(self, state_dir: Path) -> None:
        state = run_folder.load_tensors(state_dir / run_folder.STATE_FILE)
        rng = state["rng"].get(self.dist.rank)
        if rng is None:  # resumed with more ranks than saved: fresh, per-rank seeds already set
            return
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])

    # -- loop --------------------------------------------------------------------------------------------------

    def run(self, progress: bool = True) -> Path:
        cfg = self.config
        total = cfg.total_steps
        stop = min(total, cfg.train.max_steps) if cfg.train.max_steps is not None else total
        batches = iter(self._loader())
        every = max(1, cfg.train.log_every)
        window_start, window_steps = time.perf_counter(), 0
        with make_progress(progress and self.dist.is_main) as bar:
            task = bar.add_task(f"pretrain {cfg.name}", total=total, completed=self.step)
            while self.step < stop:
                batch = next(batches)
                values = self.train_step(batch)
                self.step += 1
                window_steps += 1
                if self.step % every == 0 or self.step == stop:
                    elapsed = time.perf_counter() - window_start
                    self._log(values, window_steps, elapsed)
                    bar.update(task, description=f"pretrain {cfg.name} loss {values['loss']:.3f}")
                    window_start, window_steps = time.perf_counter(), 0
                bar.update(task, completed=self.step)
                if self.step % cfg.train.checkpoint_every == 0 or self.step == stop:
                    self.save_step()
                    window_start = time.perf_counter()
        barrier(self.dist)
        if self.step >= total:
            self.save_final()
            return self.out_dir
        return run_folder.step_dir(self.out_dir, self.step)

    def _loader(self):
        cfg = self.config
        augmentation = MultiCropAugmentation(cfg.crops, self.backbone_config.mean, self.backbone_config.std)
        stream = ShardStream(
            self.shards,
            batch_size=cfg.train.batch_size_per_rank,
            augmentation=augmentation,
            patch_size=self.backbone_config.patch_size,
            seed=cfg.train.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            shuffle_buffer=cfg.train.shuffle_buffer,
            start_step=self.step,
            mask_sample_probability=cfg.ibot.mask_sample_probability,
            mask_ratio_min_max=cfg.ibot.mask_ratio_min_max,
        )
        return make_loader(stream, cfg.train.num_workers, cfg.train.seed, pin_memory=self.device.type == "cuda")

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimisation step; returns the step's losses (mean over ranks) and scheduled values."""
        sched = self.schedules.at(self.step)
        for group in self.optimizer.param_groups:
            base = sched.last_layer_lr if group["is_last_layer"] else sched.lr
            group["lr"] = base * group["lr_mult"]
            group["weight_decay"] = sched.weight_decay * group["wd_mult"]
        global_crops = batch["global_crops"].to(self.device, non_blocking=True)
        local = batch["local_crops"]
        local_crops = local.to(self.device, non_blocking=True) if local is not None else None
        masks = batch["masks"].to(self.device, non_blocking=True)
        with autocast(self.device):
            teacher_cls, teacher_patches = self.teacher.teacher_scores(global_crops, masks)
            student_out = self.model(global_crops, local_crops, masks)
            terms = self.criterion(student_out, teacher_cls, teacher_patches, masks, sched.teacher_temp)
        reported = mean_across_ranks(
            torch.stack(
                [
                    t.detach().float()
                    for t in (terms.total, terms.dino_global, terms.dino_local, terms.ibot, terms.koleo)
                ]
            ),
            self.dist,
        ).tolist()
        values = dict(zip(LOSS_KEYS, reported, strict=True))
        if not all(math.isfinite(v) for v in reported):
            last = run_folder.latest_step_dir(self.out_dir)
            raise TrainingDivergedError(
                f"the loss became {values['loss']} at step {self.step + 1} "
                f"({', '.join(f'{k}={v:.4g}' for k, v in values.items())}); training stopped. The last good "
                f"checkpoint is {last or 'none (no checkpoint was written yet)'}. Lower optim.base_lr or raise "
                "optim.warmup_epochs / optim.clip_grad, then start again (or --resume from that checkpoint)."
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms.total).backward()
        if self.config.optim.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            for part in (self.student.backbone, self.student.dino_head, self.student.ibot_head):
                if part is not None:
                    nn.utils.clip_grad_norm_(part.parameters(), self.config.optim.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        ema_update(self.teacher, self.student, sched.momentum)
        values.update(
            lr=sched.lr,
            last_layer_lr=sched.last_layer_lr,
            weight_decay=sched.weight_decay,
            momentum=sched.momentum,
            teacher_temp=sched.teacher_temp,
        )
        return values

    def _log(self, values: dict[str, float], steps: int, seconds: float) -> None:
        if self.metrics is None:
            return
        images = steps * self.config.train.batch_size_per_rank * self.dist.world_size
        record = {
            "step": self.step,
            "epoch": self.step / self.config.steps_per_epoch,
            **values,
            "steps_per_s": steps / max(seconds, 1e-9),
            "images_per_s": images / max(seconds, 1e-9),
            "time": time.time(),
        }
        self.metrics.write(record)
        log.debug("step %d: %s", self.step, record)

    # -- checkpoints -------------------------------------------------------------------------------------------

    def save_step(self) -> None:
        """A step checkpoint: chex backbone + heads + full training state (all ranks' RNG states)."""
        bad = [name for name, p in self.student.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise TrainingDivergedError(
                f"parameters became NaN/inf at step {self.step} ({', '.join(bad[:4])}); no checkpoint written. The "
                f"last good checkpoint is {run_folder.latest_step_dir(self.out_dir) or 'none'}. Lower optim.base_lr."
            )
        cuda_rng = torch.cuda.get_rng_state() if self.device.type == "cuda" else None
        rng = {"torch": torch.get_rng_state(), "cuda": cuda_rng}
        all_rng = _gather_objects(rng, self.dist)
        if self.dist.is_main:
            state = {
                "step": self.step,
                "student": self.student.state_dict(),
                "teacher": self.teacher.state_dict(),
                "criterion": self.criterion.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": dict(enumerate(all_rng)),
            }

            def write(folder: Path) -> None:
                self._write_backbone(folder)
                run_folder.save_tensors(state, folder / run_folder.STATE_FILE)

            with disk_full_as_error(self.out_dir, f"the step {self.step} checkpoint"):
                run_folder.write_step_dir(self.out_dir, self.step, write, self.config.train.keep_checkpoints)
        barrier(self.dist)

    def save_final(self) -> None:
        if self.dist.is_main:
            with disk_full_as_error(self.out_dir, "the final checkpoint"):
                self._write_backbone(self.out_dir)
            log.info("pretraining finished at step %d: checkpoint %s", self.step, self.out_dir)

    def _write_backbone(self, folder: Path) -> None:
        teacher = self.teacher
        save_checkpoint(teacher.backbone, self.backbone_config, folder)
        heads = {"dino_head": teacher.dino_head.state_dict()}
        if teacher.ibot_head is not None:
            heads["ibot_head"] = teacher.ibot_head.state_dict()
        run_folder.save_tensors(heads, folder / run_folder.HEADS_FILE)


def param_groups(network: nn.Module, layerwise_decay: float, patch_embed_lr_mult: float) -> list[dict[str, Any]]:
    """AdamW groups as DINOv2's: per-parameter lr multiplier (layer-wise decay, patch embedding), no weight
    decay on biases, norms and layer scales, and a flag for the prototypes (frozen in the first epoch)."""
    depth = len(network.backbone.blocks)
    groups: dict[tuple[float, float, bool], list[nn.Parameter]] = {}
    for name, param in network.named_parameters():
        if not param.requires_grad:
            continue
        layer = depth + 1
        if name.startswith("backbone."):
            inner = name.removeprefix("backbone.")
            if inner.startswith(("patch_embed", "pos_embed", "cls_token", "reg_token")):
                layer = 0
            elif inner.startswith("blocks."):
                layer = int(inner.split(".")[1]) + 1
        elif name == "mask_token":
            layer = 0
        lr_mult = layerwise_decay ** (depth + 1 - layer)
        if "patch_embed" in name:
            lr_mult *= patch_embed_lr_mult
        wd_mult = 0.0 if name.endswith(".bias") or "norm" in name or "gamma" in name else 1.0
        groups.setdefault((lr_mult, wd_mult, "last_layer" in name), []).append(param)
    return [
        {"params": params, "lr_mult": lr_mult, "wd_mult": wd_mult, "is_last_layer": last, "lr": 0.0}
        for (lr_mult, wd_mult, last), params in groups.items()
    ]


def _uniform_drop_path(backbone: nn.Module, rate: float) -> None:
    """The same drop-path rate in every block (DINOv2's drop_path_uniform), not timm's linear ramp from 0."""
    if rate <= 0:
        return
    for block in backbone.blocks:
        block.drop_path1 = DropPath(rate)
        block.drop_path2 = DropPath(rate)


def _gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    if not info.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def _list_shards(shard_dirs: list[Path]) -> list[Path]:
    """Complete shards of each folder (from its index), or .tar files given directly."""
    if not shard_dirs:
        raise ShardError("no shard folders given; run `chex shard` first or pass --shards DIR")
    shards: list[Path] = []
    for item in map(Path, shard_dirs):
        if item.suffix == ".tar" and item.is_file():
            shards.append(item)
            continue
        if not item.is_dir():
            raise ShardError(f"shard folder {item} does not exist; run `chex shard` first or pass --shards DIR")
        from pipeline.shard.reader import shard_paths

        shards.extend(shard_paths(item))
    if not shards:
        raise ShardError(f"no complete shards in {', '.join(map(str, shard_dirs))}; run `chex shard` first")
    return shards
