"""Name the inputs the report expected but did not find, each with the command that makes it."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.report.collect import HEADS, RUN_FILE, Collection, Run, head_name
from pipeline.report.tables import ORACLE, fraction_name
from pipeline.runs import RunFolder

EFFICIENCY_FRACTIONS = (0.01, 0.1)


def probe_hint(dataset: str, head: str, backbone: str | None = None, fraction: float | None = None) -> str:
    """The `chex probe` command line that produces one run folder."""
    parts = ["chex probe", f"--head {head}", f"--dataset {dataset}"]
    if backbone:
        parts.append(f"--backbone {backbone}")
    if fraction is not None:
        parts.append(f"--label-fraction {fraction:g}")
    return "`" + " ".join(parts) + "`"


def rerun_hint(run: Run, fraction: float | None = None, extra: str = "") -> str:
    """The `chex probe` command line of `run`'s configuration (another label fraction with `fraction`): a run in
    a folder of its own (`<head>@<tag>`) gets the flags of its head options and probe settings from run.json."""
    hint = probe_hint(run.dataset, run.head, run.backbone, fraction)[1:-1]
    if run.record is not None and RunFolder(run.folder).path_names().get("config_tag"):
        hint = " ".join([hint, *_head_flags(run.record.head, run.record.head_config), *_probe_flags(run.record.config)])
    return f"`{hint}{extra}`"


def _head_flags(head: str, config: dict) -> list[str]:
    from heads.registry import head_names, head_spec

    if head not in head_names():
        return []
    spec, flags = head_spec(head), []
    for option in spec.options:
        value, flag = config.get(option.name, option.default), spec.flag(option)
        if value != option.default:
            flags.append(f"--{flag}" if value is True else f"--no-{flag}" if value is False else f"--{flag} {value:g}"
                         if isinstance(value, float) else f"--{flag} {value}")  # fmt: skip
    return flags


def _probe_flags(config: dict) -> list[str]:
    """`chex probe` flags that give a run these probe settings (ProbeConfig.identity(); seed 0, train views on,
    the full sweep and 1,000 resamples are the defaults)."""
    flags = []
    if config.get("lrs"):
        flags.append("--lrs " + ",".join(f"{lr:g}" for lr in config["lrs"]))
    for name, flag in (("epochs", "--epochs"), ("batch_size", "--batch-size"), ("micro_batch", "--micro-batch")):
        if config.get(name):
            flags.append(f"{flag} {config[name]}")
    if config.get("seed"):
        flags.append(f"--seed {config['seed']}")
    if config.get("n_resamples", 1000) != 1000:
        flags.append(f"--resamples {config['n_resamples']}")
    if config.get("train_views") is False:
        flags.append("--no-train-views")
    if config.get("sweep", "full") != "full":
        flags.append(f"--sweep {config['sweep']}")
    for name, flag in (("selection", "--selection"), ("seeds", "--seeds"), ("cv_folds", "--cv"),
                       ("cv_repeats", "--cv-repeats")):  # fmt: skip
        if name in config:  # absent at their defaults (ProbeConfig.identity)
            flags.append(f"{flag} {config[name]}")
    if config.get("standardize"):
        flags.append("--standardize")
    return flags


def survival_hint(coll: Collection) -> str:
    """What to run for Table IV: probe a survival data set the workspace has, else make one first."""
    expected = [d for d in coll.datasets if coll.is_survival(d)]
    if expected:
        return f"no survival results (Table IV): run {probe_hint(expected[0], 'glori')}"
    return (
        "no survival results (Table IV): no data set with a survival endpoint; make one with `chex manifest plco "
        "--source ...` or `chex manifest custom NAME --survival TIME:EVENT ...`, `chex embed` it, then "
        "`chex probe --head glori --dataset NAME`"
    )


def missing_inputs(coll: Collection) -> list[str]:
    """Runs of the expected grid (data sets x backbones x linear/GLoRI/MLP) and files the report lacks."""
    if not coll.runs:
        datasets = coll.datasets or ["<dataset>"]
        return [
            f"no probe results found: run {probe_hint(d, 'linear')} (and --head glori, --head mlp)" for d in datasets
        ]
    messages = []
    backbones = [b for b in coll.backbones if b != ORACLE[0]]  # the synthetic oracle has its own head only
    for dataset in coll.datasets:
        heads = coll.task_of(dataset).report_heads or HEADS  # the heads the data set's task expects
        if not any(r.dataset == dataset for r in coll.runs):
            others = [f"--head {h}" for h in heads[1:]]
            if len(backbones) > 1:
                others.append("for each backbone with --backbone")
            messages.append(
                f"no results for {dataset}: run {probe_hint(dataset, heads[0])}"
                + (f" (and {', '.join(others)})" if others else "")
            )
            continue
        for backbone in backbones:
            for head in heads:  # any configuration of the head counts
                if not any(r.model[0] == backbone and r.head == head for r in coll.full_runs(dataset)):
                    where = f"{dataset}" + (f" (backbone {backbone})" if len(backbones) > 1 else "")
                    hint = probe_hint(dataset, head, backbone if len(backbones) > 1 else None)
                    messages.append(f"no {head_name(head)} results for {where}: run {hint}")
    messages += _missing_fractions(coll)
    messages += unprobed_stores(coll)
    for run in coll.full_runs():
        if run.backbone == ORACLE[0]:
            continue  # the synthetic oracle is written by `chex demo`, not by a command a user reruns
        if coll.is_survival(run.dataset) and run.survival_path is None:
            messages.append(
                f"no survival.parquet for {run.dataset} {run.backbone}/{head_name(run.model[1])} ({run.folder}): "
                f"no Kaplan-Meier curves from it; rerun {rerun_hint(run)}"
            )
        if not (run.folder / RUN_FILE).is_file():
            messages.append(
                f"no run.json in {run.folder}: the run may be incomplete (the probe writes run.json last) and its "
                "provenance is unknown"
            )
        if run.computed:
            messages.append(
                f"no results.parquet in {run.folder}: metrics computed from its predictions for this report; "
                f"run `chex stats {run.folder}` to keep them"
            )
    if not any(r.attention_dir is not None for r in coll.runs):
        glori = [r for r in coll.full_runs() if r.head == "glori"]
        if glori:
            messages.append(
                "no GLoRI attention maps (attention/ in a GLoRI run folder): no attention figure; run "
                f"{rerun_hint(glori[0], extra=' --save-attention 8 --force')}"
            )
    return messages


def unprobed_stores(coll: Collection) -> list[str]:
    """Each feature store of the workspace with no run in the report (an embedded backbone the comparison tables
    lack), with its family as the store recorded it and the command that probes it."""
    if coll.workspace is None:
        return []
    probed = set(coll.backbones)
    dataset = next((d for d in coll.datasets if not coll.is_survival(d)), None) or "<dataset>"
    messages = []
    for backbone in coll.workspace.stores():
        if backbone in probed:
            continue
        family = _store_family(coll.workspace.features_dir(backbone))
        messages.append(
            f"backbone {backbone} ({family}) is embedded (features/{backbone}) but has no probe runs, so the "
            f"comparison tables lack it: run {probe_hint(dataset, 'linear', backbone)} (and --head glori)"
        )
    return messages


def _store_family(store: Path) -> str:
    """The family a store's attributes record (zarr.json, read as JSON: no Zarr import for a name)."""
    try:
        attrs = json.loads((store / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError):
        return "family unknown"
    return f"family {attrs['family']}" if attrs.get("family") else "family not recorded"


def _missing_fractions(coll: Collection) -> list[str]:
    partial = {r.dataset for r in coll.runs if not r.is_full}
    if not partial:
        dataset = next((d for d in coll.datasets if not coll.is_survival(d)
                        and coll.task_of(d).headline_metric == "auroc"), None)  # fmt: skip
        if dataset is None:
            return []
        fractions = ",".join(f"{f:g}" for f in EFFICIENCY_FRACTIONS)
        return [
            "no label-efficiency runs (label_fraction < 1): no label-efficiency table or curves; run "
            f"{probe_hint(dataset, 'linear')[:-1]} --label-fraction {fractions}`"
        ]
    messages = []
    for dataset in sorted(partial):
        fractions = sorted({round(r.label_fraction, 9) for r in coll.runs if r.dataset == dataset} | {1.0})
        for model in coll.models([r for r in coll.runs if r.dataset == dataset]):
            if model == ORACLE:  # a reference fitted on the planted features, not a probe
                continue
            if model[0] == ORACLE[0]:
                continue  # the oracle has full-label runs only, and no `chex probe` head makes more
            if model[1].partition(" (")[0] == "zeroshot":
                continue  # zero-shot (`chex zeroshot`) trains on no labels: it has no label fractions
            some = next(r for r in coll.runs if r.dataset == dataset and r.model == model)
            for fraction in fractions:
                if fraction < 1 and coll.run(dataset, model, fraction) is None:
                    messages.append(
                        f"no {fraction_name(fraction)}-label run for {dataset} {model[0]}/{head_name(model[1])}: "
                        f"run {rerun_hint(some, fraction)}"
                    )
    return messages
