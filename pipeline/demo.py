"""`chex demo`: the whole pipeline on a synthetic cohort, in one command.

synth -> shard -> pretrain (CPU preset) -> embed (pretrained and random-init backbones of the same
architecture) -> probe (linear and GLoRI on every data set, label efficiency on one) -> oracle (the planted
features' ceiling, pipeline/synth/oracle.py) -> report. `null=True` runs the same on the null cohort (same
pixels, labels and outcomes drawn independently of them): every row, the oracle's included, should sit at chance.

Every stage is resumable and idempotent, so a rerun reuses whatever finished: the cohort is not regenerated,
finished shards and store units are kept, a finished pretraining run is loaded, identical probes are no-ops.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from heads.glori import PAPER_DIMS
from heads.registry import head_spec
from pipeline.backbone import BackboneConfig, build_backbone, save_checkpoint
from pipeline.embed.stage import EmbedOptions, embed_datasets
from pipeline.errors import ConfigError
from pipeline.pretrain import run_folder
from pipeline.pretrain.config import load_config
from pipeline.pretrain.train import pretrain
from pipeline.probe.protocol import ProbeConfig, run_probe
from pipeline.progress import make_progress, note
from pipeline.report.write import ReportSummary, write_report
from pipeline.shard.dataset import shard_dataset
from pipeline.synth import generate_cohort
from pipeline.synth.oracle import write_oracle_runs
from pipeline.workspace import Workspace

log = logging.getLogger(__name__)

PRETRAINED = "demo-dino"
RANDOM_INIT = "demo-random-init"
SMOKE_TEST_NOTE = (
    "chex demo --size tiny is a smoke test, not evidence: a few pretraining steps on 64-px images, so the pretrained "
    "and random-init rows are expected to tie and the CIs are wide; run --size small (or medium) to compare backbones"
)


@dataclass(frozen=True)
class DemoSize:
    """How big each stage of the demo runs."""

    cohort: str  # synth size preset
    pretrain_preset: str
    pretrain_overrides: tuple[str, ...]  # `key=value` overrides of the preset
    embed_size: int | None  # image size given to embed (None: the checkpoint's own)
    epochs_large: int  # probe epochs of the large data sets (the paper: 10)
    epochs_small: int  # probe epochs of Shenzhen/Montgomery/JSRT (the paper: 100)
    n_resamples: int
    n_permutations: int
    label_fractions: tuple[float, ...]
    batch_size: int | None = None  # None: the data set card's (the paper's 256, or 16)
    lrs: tuple[float, ...] = (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3)
    train_views: int = 1
    attention_images: int = 4
    # GLoRI decoder width / feed-forward width: the paper's 768 / 2048 costs ~20x more on a CPU for no gain on a
    # 128-dim backbone; the smaller decoder keeps the demo in minutes.
    glori_dims: tuple[int, int] = PAPER_DIMS
    glori_dims_by_dataset: tuple[tuple[str, tuple[int, int]], ...] = ()  # (data set, dims) where they differ


SIZES: dict[str, DemoSize] = {
    # CI: a minute or two on 2 cores; the statistics still run, with fewer resamples.
    "tiny": DemoSize(
        cohort="tiny",
        pretrain_preset="cpu_tiny",
        pretrain_overrides=("model.backbone_overrides.depth=4",),  # probes take the last 4 blocks
        embed_size=64,
        epochs_large=3,
        epochs_small=10,
        n_resamples=200,
        n_permutations=200,
        label_fractions=(0.25,),
        batch_size=32,
        lrs=(1e-4, 1e-3, 5e-3),
        glori_dims=(64, 128),
    ),
    # The default: the paper's protocol (9 lrs, 1,000 resamples) on a ~4k-image cohort, ~8 minutes. Batch 32:
    # the cards' 256 gives a few hundred training images only a handful of steps per epoch.
    "small": DemoSize(
        cohort="small",
        pretrain_preset="cpu_small",
        pretrain_overrides=(),
        embed_size=None,
        epochs_large=10,
        epochs_small=25,
        n_resamples=1000,
        n_permutations=1000,
        label_fractions=(0.1, 0.3),
        batch_size=32,
        train_views=2,
        # GLoRI 64/128 wide: on CXR-LT 24 (40 queries) 68 s against 107 s at 128/256, test macro AUROC 0.571 vs
        # 0.572; with 25 epochs on the small sets (not 30) the demo fits in 8 minutes on 2 cores. PLCO keeps
        # 128/256: 24 s for its two endpoints, and at 64/128 its test C-index fell from 0.754 to 0.668 (CVD).
        glori_dims=(64, 128),
        glori_dims_by_dataset=(("plco", (128, 256)),),
    ),
    # The paper's epochs (100 on the small sets) and GLoRI size: for a GPU, or an hour or more of CPU.
    "medium": DemoSize(
        cohort="medium",
        pretrain_preset="cpu_small",
        pretrain_overrides=(),
        embed_size=None,
        epochs_large=10,
        epochs_small=100,
        n_resamples=1000,
        n_permutations=1000,
        label_fractions=(0.01, 0.1),
        train_views=2,
    ),
}
SMALL_SETS = ("shenzhen", "montgomery", "jsrt", "scr")  # the paper's 100-epoch sets (SCR: 247 images)
# Probed but not pretrained on: the pretraining corpus, and so every number of the other data sets, stays what it
# was before the tubes set (RANZCR) joined the demo.
NOT_PRETRAINED_ON = ("ranzcr", "scr")
HEADS = ("linear", "glori")
# Each data set is probed with the demo's heads that give its task's outputs (heads.registry `output`): linear and
# GLoRI for classification and survival, the linear segmentation protocol and the small decoder for segmentation.
DEMO_HEADS = (*HEADS, "seg_linear", "seg_decoder")
# DINOv2's linear protocol: CLS of the last 4 blocks + the mean patch token. A minutes-long CPU pretraining run
# teaches the patch tokens (iBOT) far more than the CLS token (benchmarks/bench_pretrain.py), and the
# comparison with the random-init backbone should show what pretraining learned.
LINEAR_OPTIONS = {"avgpool": True}


def _head_options(head: str, plan: DemoSize, dataset: str | None = None) -> dict[str, object]:
    """The demo's head options, completed and checked by the head's declaration (heads.registry)."""
    dims = dict(plan.glori_dims_by_dataset).get(dataset, plan.glori_dims)
    given: dict[str, object] = {}
    if head == "glori":
        given = {"embed_dim": dims[0], "ffn_dim": dims[1]}
    elif head == "linear":
        given = LINEAR_OPTIONS
    return head_spec(head).resolve(given)


@dataclass
class DemoSummary:
    """What the demo did: per-stage seconds, the report, and the headline table for the terminal."""

    workspace: Path
    seconds: dict[str, float] = field(default_factory=dict)
    report: ReportSummary | None = None

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())


def run_demo(
    workspace: Workspace,
    size: str = "small",
    seed: int = 0,
    workers: int = 2,
    progress: bool = True,
    null: bool = False,
    variation: bool = False,
) -> DemoSummary:
    """Run (or resume) the whole pipeline on the synthetic cohort in `workspace` (the null cohort if `null`)."""
    if size not in SIZES:
        raise ConfigError(f"--size {size!r}: choose one of {', '.join(SIZES)}")
    plan = SIZES[size]
    summary = DemoSummary(workspace=workspace.root)
    datasets: list[str] = []
    stages: list[tuple[str, Callable[[], None]]] = []

    def synth() -> None:
        cohort = generate_cohort(
            workspace, size=plan.cohort, seed=seed, null=null, workers=workers, progress=False, variation=variation
        )
        datasets.extend(cohort)

    def shard() -> None:
        for dataset in datasets:
            shard_dataset(
                workspace.manifest_path(dataset),
                workspace.images_dir(dataset),
                workspace.shards_dir(dataset),
                name=dataset,
                target_shard_bytes=8e6,
                workers=1,  # a few shards per data set: a process pool would cost more than it saves
                progress=False,
            )

    def pretrain_stage() -> None:
        _pretrain(workspace, plan, [workspace.shards_dir(d) for d in datasets if d not in NOT_PRETRAINED_ON])

    def embed() -> None:
        pretrained = workspace.checkpoints_dir(PRETRAINED)
        random_init = _random_init_checkpoint(workspace, pretrained, seed)
        for name, checkpoint in ((PRETRAINED, pretrained), (RANDOM_INIT, random_init)):
            embed_datasets(
                workspace,
                datasets,
                checkpoint=checkpoint,
                backbone_name=name,
                image_size=plan.embed_size,
                seed=seed,
                options=EmbedOptions(train_views=plan.train_views, workers=workers, progress=False),
            )
        workspace.set_default_backbone(PRETRAINED)  # `chex probe` without --backbone uses the pretrained store

    def probe() -> None:
        for backbone, head, dataset, fraction in _probe_jobs(datasets, plan):
            config = ProbeConfig(
                lrs=head_spec(head).lrs or plan.lrs,  # a head's own grid where it has one (segmentation)
                epochs=plan.epochs_small if dataset in SMALL_SETS else plan.epochs_large,
                batch_size=plan.batch_size,
                label_fraction=fraction,
                seed=seed,
                n_resamples=plan.n_resamples,
                save_attention=plan.attention_images if head == "glori" and fraction == 1.0 else 0,
                head_options=_head_options(head, plan, dataset),
            )
            run_probe(workspace, dataset, head, backbone, config, progress=False)

    def oracle() -> None:
        write_oracle_runs(workspace, datasets, n_resamples=plan.n_resamples, seed=seed)

    def report() -> None:
        summary.report = write_report(
            workspace,
            n_resamples=plan.n_resamples,
            n_permutations=plan.n_permutations,
            seed=seed,
            progress=False,
            cautions=(SMOKE_TEST_NOTE,) if size == "tiny" else (),
        )

    stages = [
        ("synthesise the cohort", synth),
        ("write shards", shard),
        ("pretrain (DINOv2, CPU preset)", pretrain_stage),
        ("embed once (pretrained + random init)", embed),
        ("probe (linear + GLoRI, every data set)", probe),
        ("oracle (planted features)", oracle),
        ("report", report),
    ]
    with make_progress(progress) as bar:
        task = bar.add_task("chex demo", total=len(stages), eta=False)  # stages differ in length
        for label, stage in stages:
            bar.update(task, description=label)
            if progress:
                note(f"stage start: {label}")
            started = time.perf_counter()
            stage()
            summary.seconds[label] = time.perf_counter() - started
            log.info("%s: %.1f s", label, summary.seconds[label])
            if progress:
                note(f"stage end: {label} ({summary.seconds[label]:.1f} s)")
            bar.advance(task)
        bar.update(task, description="done")
    return summary


def dataset_heads(dataset: str) -> tuple[str, ...]:
    """The demo's heads that give the outputs of the synthetic data set's task (its card chooses the task)."""
    from pipeline.synth.cohort import synthetic_card
    from pipeline.tasks import task_for_card

    task = task_for_card(synthetic_card(dataset))
    return tuple(h for h in DEMO_HEADS if head_spec(h).output == task.head_output)


def _pretrain(workspace: Workspace, plan: DemoSize, shard_dirs: list[Path]) -> Path:
    out_dir = workspace.checkpoints_dir(PRETRAINED)
    if (out_dir / "model.pt").is_file() and (out_dir / "config.json").is_file():
        return out_dir  # a finished run: reuse it
    resume = run_folder.latest_step_dir(out_dir) is not None
    config = load_config(plan.pretrain_preset, overrides=list(plan.pretrain_overrides))
    return pretrain(config, shard_dirs, out_dir, resume=resume, progress=False)


def _random_init_checkpoint(workspace: Workspace, pretrained: Path, seed: int) -> Path:
    """The pretrained backbone's architecture with fresh random weights, written as a chex checkpoint."""
    out_dir = workspace.checkpoints_dir(RANDOM_INIT)
    if (out_dir / "model.pt").is_file():
        return out_dir
    config = BackboneConfig.load(pretrained / "config.json")
    torch.manual_seed(seed)
    save_checkpoint(build_backbone(config), config, out_dir)
    return out_dir


def _probe_jobs(datasets: list[str], plan: DemoSize) -> list[tuple[str, str, str, float]]:
    """(backbone, head, dataset, label fraction): the data set's heads (`dataset_heads`) for the pretrained backbone,
    the linear probe for the random-init baseline (classification and survival sets), and label efficiency on the
    largest multi-label set."""
    heads = {d: dataset_heads(d) for d in datasets}
    jobs = [(PRETRAINED, head, d, 1.0) for d in datasets for head in heads[d]]
    jobs += [(RANDOM_INIT, "linear", d, 1.0) for d in datasets if "linear" in heads[d]]  # not segmentation: ~50 s
    efficiency_set = "cxrlt24" if "cxrlt24" in datasets else datasets[0]
    jobs += [(PRETRAINED, head, efficiency_set, f) for f in plan.label_fractions for head in HEADS]
    return jobs
