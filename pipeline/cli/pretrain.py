"""`chex pretrain`: DINOv2 self-distillation of a ViT, streamed from shards."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import (
    NoProgressAlias,
    QuietOption,
    WorkspaceOption,
    app,
    chex_command,
    configure_logging,
    console,
    workspace_from,
)
from pipeline.cli.checks import checkpoint_path
from pipeline.errors import ShardError
from pipeline.workspace import out_folder

# a folder holding one of these is a pretraining run (pipeline/pretrain/run_folder.py)
RUN_MARKERS = ("model.pt", "config.json", "metrics.jsonl", "pretrain_config.yaml", "step_*")


@app.command(
    "pretrain",
    help=(
        "DINOv2 self-distillation (DINO + iBOT + KoLeo) of a ViT, streamed from shards. "
        "Multi-GPU/CPU: torchrun --nproc_per_node=K $(which chex) pretrain ..."
    ),
)
@chex_command
def pretrain_command(
    config: Annotated[
        str, typer.Option("--config", "-c", help="Preset (cpu_small, cpu_tiny, vitl16_chexfound) or YAML file.")
    ] = "cpu_small",
    shards: Annotated[
        list[Path] | None, typer.Option("--shards", help="Shard folder (repeatable; default: all of shards/*).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run folder (default: checkpoints/<name>/).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Run name (default: the config's name).")] = None,
    stage: Annotated[
        str | None, typer.Option("--stage", help="A stage of the config, e.g. res512 of vitl16_chexfound.")
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Total steps (schedules span them).")] = None,
    epochs: Annotated[float | None, typer.Option("--epochs", help="Epochs of train.epoch_length steps.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in the run folder.")] = False,
    init_from: Annotated[
        Path | None, typer.Option("--init-from", help="Start from this checkpoint (pos. embeddings interpolated).")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config key: section.key=value (repeatable).")
    ] = None,
    quiet: QuietOption = False,
    no_progress: NoProgressAlias = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    configure_logging(verbose)
    ws = workspace_from(workspace)
    if out is not None:
        out = out_folder(ws, out, "checkpoints", "pretraining run", RUN_MARKERS)
    if init_from is not None:
        checkpoint_path(init_from, "--init-from")
    from pipeline.pretrain.config import load_config  # no torch: config errors come before the heavy imports

    overrides = list(set_ or [])
    if steps is not None:
        overrides.append(f"train.total_steps={steps}")
    if epochs is not None:
        overrides.append(f"optim.epochs={epochs}")
    if name is not None:
        overrides.append(f"name={name}")
    cfg = load_config(config, overrides, stage=stage)
    shard_dirs = list(shards) if shards else _workspace_shards(ws.root / "shards")
    out_dir = out if out is not None else ws.checkpoints_dir(cfg.name)
    from pipeline.pretrain.train import pretrain

    final = pretrain(cfg, shard_dirs, out_dir, resume=resume, init_from=init_from, progress=not (quiet or no_progress))
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        console.print(f"checkpoint: {final}  (chex embed --checkpoint {final})", highlight=False)


def _workspace_shards(root: Path) -> list[Path]:
    dirs = sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []
    if not dirs:
        raise ShardError(f"no shard folders in {root}; run `chex shard` first or pass --shards DIR")
    return dirs
