"""`chex probe`: Train heads on cached features: lr sweep, refit, predictions and statistics.

Head flags are built from the heads' declarations (heads.registry): each declared option becomes one flag
(`--avgpool`, `--glori-dim`, `--mlp-hidden`, ...) that reaches only its head. Option defaults are None here:
unset options take `ProbeConfig`'s (or the head's declared) default, which live in one place.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Annotated, Any

import typer

from heads.registry import HeadOption, HeadSpec, head_names, head_specs
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
from pipeline.cli.checks import datasets_in
from pipeline.errors import ConfigError


def _probe(
    head: Annotated[str, typer.Option(help=f"{', '.join(head_names())} (comma-separated for several).")] = "linear",
    dataset: Annotated[str | None, typer.Option(help="Data set(s), comma-separated (default: all).")] = None,
    backbone: Annotated[str | None, typer.Option(help="Feature store under features/ (default: the only one).")] = None,
    lrs: Annotated[str | None, typer.Option(help="Sweep lrs, comma-separated (default: the paper's 9).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: the data set card's).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default: the data set card's).")] = None,
    label_fraction: Annotated[
        str | None, typer.Option(help="Fractions of train patients, e.g. 0.01,0.1,1.0 (default 1.0).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of splits, inits, shuffling and the bootstrap (0).")] = None,
    resamples: Annotated[int | None, typer.Option(help="Bootstrap resamples for the CIs (1000).")] = None,
    save_attention: Annotated[
        int | None, typer.Option(help="Heads with attention maps: save those of N test images.")
    ] = None,
    train_views: Annotated[
        bool | None, typer.Option(help="Sample stored augmented views of training images (on).")
    ] = None,
    sweep: Annotated[
        str | None, typer.Option(help="full (the paper's 9-lr sweep) or halving (successive halving over the lrs).")
    ] = None,
    micro_batch: Annotated[
        int | None, typer.Option(help="Feed each batch to the heads in pieces of N images (bounded memory; 0: whole).")
    ] = None,
    selection: Annotated[
        str | None,
        typer.Option(help="How val picks the lr: auroc (the paper's), loss or one-se; diverged lrs never win."),
    ] = None,
    seeds: Annotated[
        int | None, typer.Option(help="Run the whole protocol for N seeds; numbers are the mean, with the seed SD.")
    ] = None,
    pooled_selection: Annotated[
        bool | None,
        typer.Option(help="With --seeds N: one lr for all seeds, chosen on their mean val scores (off: each its own)."),
    ] = None,
    cv: Annotated[
        int | None, typer.Option(help="K-fold patient-level stratified CV over all labelled images (small sets).")
    ] = None,
    cv_repeats: Annotated[int | None, typer.Option(help="Repeats of --cv with new folds and seeds (1).")] = None,
    standardize: Annotated[
        bool | None, typer.Option(help="z-score probe inputs per feature, fitted on train (off: the paper's).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 (default: best available).")] = None,
    dask: DaskOption = None,
    workers: Annotated[int, typer.Option(help="Workers of a --dask local cluster.")] = 2,
    force: Annotated[bool, typer.Option(help="Rerun even when the outputs are present.")] = False,
    quiet: QuietOption = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    workspace: WorkspaceOption = None,
    **head_flags: Any,
) -> None:
    configure_logging(verbose)
    ws = workspace_from(workspace)
    unknown = [h for h in _names(head) if h not in head_names()]
    if unknown or not _names(head):
        raise ConfigError(f"--head {head!r}: known heads are {', '.join(head_names())}")
    datasets = _names(dataset) if dataset else ws.datasets()
    if not datasets:
        raise ConfigError(f"no data sets in workspace {ws.root}; create one with `chex synth` or `chex manifest`")
    datasets_in(ws, datasets, "`chex shard {name}` (optional) and `chex embed {name}`, and probe again")
    from pipeline.cautions import warn_few_test_positives
    from pipeline.probe import ProbeConfig, ProbeJob, run_probes
    from pipeline.probe.estimate import announce_glori_costs
    from pipeline.probe.protocol import head_config_of

    given = dict(lrs=tuple(_floats(lrs, "--lrs")) if lrs else None, epochs=epochs, batch_size=batch_size,
                 seed=seed, n_resamples=resamples, save_attention=save_attention, train_views=train_views,
                 device=device, sweep=sweep, micro_batch=micro_batch, selection=selection, seeds=seeds,
                 pooled_selection=pooled_selection, cv_folds=cv, cv_repeats=cv_repeats,
                 standardize=standardize)  # fmt: skip
    base = ProbeConfig(**{k: v for k, v in given.items() if v is not None})
    fractions = _floats(label_fraction, "--label-fraction") if label_fraction else [base.label_fraction]
    jobs = []
    for name in datasets:
        for head_name in _names(head):
            options = _head_options(head_name, head_flags)
            head_config_of(head_name, options)  # a bad head or option fails here, before any estimate or run
            for fraction in fractions:
                config = dataclasses.replace(base, label_fraction=fraction, head_options=options)
                jobs.append(ProbeJob(name, head_name, backbone, config))
    warn_few_test_positives(ws, datasets)  # a finding with < 20 test positives has a wide AUROC CI
    announce_glori_costs(ws, jobs)  # time and memory before any GLoRI run starts (pipeline/probe/estimate.py)
    summaries = run_probes(ws, jobs, force=force, progress=dask is None and not quiet, dask=dask, n_workers=workers)
    for s in summaries:
        status = "already done" if s.skipped else f"{s.seconds:.1f} s"
        console.print(
            f"{s.dataset} / {s.backbone} / {s.head} (label fraction {s.label_fraction:g}): lr {s.chosen_lr:g}, "
            f"{s.val_name} {_fmt(s.val_macro_auroc)}, {s.test_name} {_fmt(s.test_macro_auroc)} "
            f"({status}) -> {s.folder}",
            highlight=False,
        )
        why = _selection_note(s.sweep)
        if why:
            console.print(f"  lr chosen by {why}", highlight=False)


def _parameter_name(spec: HeadSpec, option: HeadOption) -> str:
    return f"{spec.name}__{option.name}"


def _head_parameters() -> list[inspect.Parameter]:
    """One keyword parameter per declared head option, flag and help from the declaration, default None."""
    params = []
    for spec in head_specs():
        for option in spec.options:
            kind = type(option.default)
            flag = spec.flag(option)
            declared = [f"--{flag}/--no-{flag}"] if kind is bool else [f"--{flag}"]
            info = typer.Option(*declared, help=f"{spec.name}: {option.help} (default {option.default}).")
            params.append(
                inspect.Parameter(
                    _parameter_name(spec, option),
                    inspect.Parameter.KEYWORD_ONLY,
                    default=None,
                    annotation=Annotated[kind | None, info],
                )
            )
    return params


def _head_options(head: str, flags: dict[str, Any]) -> dict[str, Any]:
    """The options given on the command line for `head` (unknown heads are refused by the probe)."""
    prefix = f"{head}__"
    return {
        name.removeprefix(prefix): value
        for name, value in flags.items()
        if name.startswith(prefix) and value is not None
    }


def _command():
    fixed = [p for p in inspect.signature(_probe, eval_str=True).parameters.values() if p.kind != p.VAR_KEYWORD]
    signature = inspect.Signature([*fixed, *_head_parameters()])

    def probe_command(**kwargs: Any) -> None:
        names = {p.name for p in fixed}
        _probe(**{k: v for k, v in kwargs.items() if k in names}, **{k: v for k, v in kwargs.items() if k not in names})

    probe_command.__signature__ = signature  # type: ignore[attr-defined]
    probe_command.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
    return probe_command


app.command("probe", help="Train heads on cached features: lr sweep, refit, predictions and statistics.")(
    chex_command(_command())
)


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _floats(text: str, option: str) -> list[float]:
    try:
        return [float(t) for t in _names(text)]
    except ValueError as exc:
        raise ConfigError(f"{option} {text!r}: expected comma-separated numbers") from exc


def _selection_note(sweep: list[dict[str, Any]]) -> str:
    """The sweep's `selected_by` when it says more than the plain rule (a fallback, diverged lrs, several seeds)."""
    notes = sorted({str(r.get("selected_by", "")) for r in sweep if r.get("chosen")})
    plain = ("val_macro_auroc", "val_loss")
    return "; ".join(n for n in notes if n and n not in plain and "(" in n)


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"
