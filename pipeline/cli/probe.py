"""`chex probe`: Train heads on cached features: lr sweep, refit, predictions and statistics."""

from __future__ import annotations

import dataclasses
import math
from typing import Annotated

import typer

from pipeline.cli.app import (
    DaskOption,
    QuietOption,
    WorkspaceOption,
    app,
    chex_command,
    configure_logging,
    console,
    workspace_from,
)
from pipeline.errors import ConfigError


@app.command("probe", help="Train heads on cached features: lr sweep, refit, predictions and statistics.")
@chex_command
def probe_command(
    head: Annotated[str, typer.Option(help="glori, linear or mlp (comma-separated for several).")] = "linear",
    dataset: Annotated[str | None, typer.Option(help="Data set(s), comma-separated (default: all).")] = None,
    backbone: Annotated[str | None, typer.Option(help="Feature store under features/ (default: the only one).")] = None,
    lrs: Annotated[str | None, typer.Option(help="Sweep lrs, comma-separated (default: the paper's 9).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: the data set card's).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default: the data set card's).")] = None,
    label_fraction: Annotated[
        str, typer.Option(help="Fractions of train patients, e.g. 0.01,0.1,1.0 (label efficiency).")
    ] = "1.0",
    seed: Annotated[int, typer.Option(help="Seed of splits, inits, shuffling and the bootstrap.")] = 0,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples for the CIs.")] = 1000,
    save_attention: Annotated[int, typer.Option(help="GLoRI: save attention maps of N test images.")] = 0,
    avgpool: Annotated[bool, typer.Option(help="Linear: append the mean patch token to the CLS tokens.")] = False,
    train_queries: Annotated[bool, typer.Option(help="GLoRI: train the queries (CheXFound freezes them).")] = False,
    glori_dim: Annotated[int, typer.Option(help="GLoRI: decoder width (CheXFound: 768).")] = 768,
    glori_ffn_dim: Annotated[int, typer.Option(help="GLoRI: decoder feed-forward width (CheXFound: 2048).")] = 2048,
    train_views: Annotated[bool, typer.Option(help="Sample stored augmented views of training images.")] = True,
    sweep: Annotated[
        str, typer.Option(help="full (the paper's 9-lr sweep) or halving (successive halving over the lrs).")
    ] = "full",
    micro_batch: Annotated[
        int, typer.Option(help="Feed each batch to the heads in pieces of N images (bounded memory; 0: whole).")
    ] = 0,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 (default: best available).")] = None,
    dask: DaskOption = None,
    workers: Annotated[int, typer.Option(help="Workers of a --dask local cluster.")] = 2,
    force: Annotated[bool, typer.Option(help="Rerun even when the outputs are present.")] = False,
    quiet: QuietOption = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    from heads.glori import glori_options
    from pipeline.cautions import warn_few_test_positives
    from pipeline.probe import ProbeConfig, ProbeJob, run_probes
    from pipeline.probe.estimate import announce_glori_costs

    configure_logging(verbose)
    ws = workspace_from(workspace)
    datasets = _names(dataset) if dataset else ws.datasets()
    if not datasets:
        raise ConfigError(f"no data sets in workspace {ws.root}; create one with `chex synth` or `chex manifest`")
    base = ProbeConfig(
        lrs=tuple(_floats(lrs, "--lrs")) if lrs else ProbeConfig().lrs,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        n_resamples=resamples,
        save_attention=save_attention,
        train_views=train_views,
        device=device,
        sweep=sweep,
        micro_batch=micro_batch,
    )
    if glori_dim < 8 or glori_dim % 8 or glori_ffn_dim < 1:
        raise ConfigError(
            f"--glori-dim {glori_dim} / --glori-ffn-dim {glori_ffn_dim}: the width must be a multiple "
            "of GLoRI's 8 attention heads and the feed-forward width positive"
        )
    jobs = []
    for name in datasets:
        for head_name in _names(head):
            options = {"avgpool": avgpool} if head_name == "linear" else {}
            if head_name == "glori":
                options = glori_options(glori_dim, glori_ffn_dim, train_queries)
            for fraction in _floats(label_fraction, "--label-fraction"):
                config = dataclasses.replace(base, label_fraction=fraction, head_options=options)
                jobs.append(ProbeJob(name, head_name, backbone, config))
    warn_few_test_positives(ws, datasets)  # a finding with < 20 test positives has a wide AUROC CI
    announce_glori_costs(ws, jobs)  # time and memory before any GLoRI run starts (pipeline/probe/estimate.py)
    summaries = run_probes(ws, jobs, force=force, progress=dask is None and not quiet, dask=dask, n_workers=workers)
    for s in summaries:
        status = "already done" if s.skipped else f"{s.seconds:.1f} s"
        console.print(
            f"{s.dataset} / {s.backbone} / {s.head} (label fraction {s.label_fraction:g}): lr {s.chosen_lr:g}, "
            f"val macro AUROC {_fmt(s.val_macro_auroc)}, test macro AUROC {_fmt(s.test_macro_auroc)} "
            f"({status}) -> {s.folder}",
            highlight=False,
        )


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _floats(text: str, option: str) -> list[float]:
    try:
        return [float(t) for t in _names(text)]
    except ValueError as exc:
        raise ConfigError(f"{option} {text!r}: expected comma-separated numbers") from exc


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"
