"""`chex zeroshot`: zero-shot classification with a CLIP family's text tower, written as an ordinary run folder.

Argument and prompt-file errors are reported before torch is imported; the library (pipeline/zeroshot/) is
imported inside the command.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import QuietOption, WorkspaceOption, app, chex_command, configure_logging, console, workspace_from
from pipeline.cli.checks import datasets_in
from pipeline.cli.constants import ZEROSHOT_SCALES as SCALES
from pipeline.errors import ConfigError

PROMPTS_HELP = (
    "YAML/JSON: finding -> {positive: [...], negative: [...]} (default: '<finding>' vs 'no <finding>' for each of "
    "the card's findings)."
)


@app.command(
    "zeroshot",
    help="Zero-shot classification by a CLIP family's store (chexzero, biomedclip, pubmedclip): per finding, the "
    "softmax of the image's similarity to positive vs negative prompts (CheXzero's). Writes "
    "results/<dataset>/<backbone>/zeroshot/ like a probe run.",
)
@chex_command
def zeroshot_command(
    dataset: Annotated[str, typer.Option(help="Data set(s), comma-separated.")],
    backbone: Annotated[str | None, typer.Option(help="Feature store under features/ (default: the only one).")] = None,
    prompts: Annotated[Path | None, typer.Option(help=PROMPTS_HELP)] = None,
    scale: Annotated[
        str, typer.Option(help="model: the checkpoint's logit scale; none: raw cosines (CheXzero's zero_shot.py).")
    ] = "model",
    checkpoint: Annotated[
        Path | None, typer.Option(help="The files the store was embedded from (default: the path the store records).")
    ] = None,
    tokenizer: Annotated[
        Path | None, typer.Option(help="Tokenizer file or folder (default: beside the checkpoint).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of a carved val split and of the bootstrap.")] = 0,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples for the CIs.")] = 1000,
    workspace: WorkspaceOption = None,
    quiet: QuietOption = False,
) -> None:
    configure_logging(False, quiet_level=logging.WARNING if quiet else logging.INFO)
    if scale not in SCALES:
        raise ConfigError(f"--scale {scale!r}: choose one of {', '.join(SCALES)}")
    if resamples < 1:
        raise ConfigError(f"--resamples {resamples}: must be at least 1")
    for name, path in (("--checkpoint", checkpoint), ("--tokenizer", tokenizer)):
        if path is not None and not path.exists():
            raise ConfigError(f"{name} {path}: no such file or folder")
    if prompts is not None:
        from pipeline.zeroshot.prompts import read_prompt_file

        read_prompt_file(prompts)  # a malformed file fails here, before torch
    ws = workspace_from(workspace)
    names = datasets_in(ws, [d.strip() for d in dataset.split(",") if d.strip()], "`chex embed` and this command")

    from pipeline.zeroshot.run import ZeroShotConfig, run_zeroshot

    config = ZeroShotConfig(
        prompts=str(prompts) if prompts else None, scale=scale, checkpoint=str(checkpoint) if checkpoint else None,
        tokenizer=str(tokenizer) if tokenizer else None, seed=seed, n_resamples=resamples,
    )  # fmt: skip
    for name in names:
        folder = run_zeroshot(ws, name, backbone, config)
        console.print(f"{name}: zero-shot run -> {folder}")
