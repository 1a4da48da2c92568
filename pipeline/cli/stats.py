"""`chex stats` and `chex compare`: a run's metrics with bootstrap CIs, paired tests between two runs.

Both go through `pipeline.runs` (evaluate_run / compare_runs), so they print the probe's numbers. Option
defaults are None here: unset options take the run's own settings, else `StatsConfig` / `CompareConfig`'s.
Library modules are imported inside the commands, so `chex --help` stays light.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.cli.app import OverwriteOption, WorkspaceOption, app, chex_command, table_console, workspace_from
from pipeline.cli.constants import ADJUST_METHODS
from pipeline.errors import ConfigError
from pipeline.workspace import out_file

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.tasks.base import Task

PREDICTIONS_FILE = "predictions.parquet"  # pipeline.runs.PREDICTIONS_FILE
RESULTS_FILE = "results.parquet"  # pipeline.runs.RESULTS_FILE
RECORD_FILE = "run.json"  # pipeline.runs.RECORD_FILE
_out = table_console()


@app.command("stats", help="Metrics with bootstrap CIs (and survival statistics) of a run, by the probe's rules.")
@chex_command
def stats_command(
    predictions: Annotated[Path, typer.Argument(help="A run folder, or a predictions.parquet file.")],
    survival: Annotated[
        Path | None, typer.Option("--survival", help="survival.parquet for a predictions file outside a run folder.")
    ] = None,
    resamples: Annotated[int | None, typer.Option("--resamples", help="Bootstrap resamples (the run's).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the resampling (default: the run's).")] = None,
    ci: Annotated[str | None, typer.Option("--ci", help="CI method: percentile (default) or bca.")] = None,
    by_image: Annotated[bool | None, typer.Option("--by-image", help="Resample images, not patients.")] = None,
    stratified: Annotated[bool | None, typer.Option("--stratified", help="Stratified bootstrap.")] = None,
    horizons: Annotated[
        list[float] | None, typer.Option("--horizon", help="Time-dependent AUROC horizon (years); repeatable.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the results here (.parquet or .csv).")] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Replace the run folder's results.parquet (the probe's), or an existing --out file."
        ),
    ] = False,
    workspace: WorkspaceOption = None,
) -> None:
    if out is not None:
        out_file(workspace_from(workspace), out, overwrite=overwrite)
    path = _resolve(predictions, PREDICTIONS_FILE, workspace)
    from pipeline.runs import StatsConfig, evaluate_run, evaluate_tables, read_record, read_table, write_parquet

    folder = path if path.is_dir() else path.parent
    in_run = path.is_dir() or path.name == PREDICTIONS_FILE
    record = read_record(folder) if in_run else None
    given = dict(n_resamples=resamples, seed=seed, ci_method=ci, by_image=by_image, stratified=stratified,
                 horizons=tuple(horizons) if horizons else None)  # fmt: skip
    config = StatsConfig.for_run(record, **given)
    if in_run and survival is None:
        results = evaluate_run(folder, config, record)
    else:
        table = read_table(path / PREDICTIONS_FILE if path.is_dir() else path, text_as_categories=True)
        surv = read_table(_resolve(survival, "survival.parquet", workspace)) if survival else None
        results = evaluate_tables(table, None, surv, record.skipped_train if record else {}, config, "score")
    from pipeline.tasks import task_of_run

    _print_results(results, task_of_run(folder, record))
    target = out
    existing = folder / RESULTS_FILE
    if target is None and (overwrite or not existing.is_file()):
        target = existing
    if target is None:
        _out.print(f"not written: {existing} holds the probe's results; pass --out FILE, or --overwrite to replace it")
        return
    write_parquet(results, target)
    _out.print(f"wrote {len(results)} rows to {target}")


@app.command("compare", help="Paired permutation test (and DeLong) between two runs on the same test images.")
@chex_command
def compare_command(
    run_a: Annotated[Path, typer.Argument(help="Run folder or predictions.parquet of model A.")],
    run_b: Annotated[Path, typer.Argument(help="Run folder or predictions.parquet of model B.")],
    permutations: Annotated[int | None, typer.Option("--permutations", help="Number of permutations (1000).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the permutations (0).")] = None,
    by_image: Annotated[bool | None, typer.Option("--by-image", help="Swap per image, not per patient.")] = None,
    adjust: Annotated[
        str | None, typer.Option("--adjust", help=f"Multiple-comparison method: {ADJUST_METHODS} (holm).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the table (.parquet or .csv).")] = None,
    overwrite: OverwriteOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    if out is not None:
        out_file(workspace_from(workspace), out, overwrite=overwrite)
    from pipeline.runs import CompareConfig, compare_runs, write_parquet

    given = dict(n_permutations=permutations, seed=seed, by_image=by_image, adjust=adjust)
    config = dataclasses.replace(CompareConfig(), **{k: v for k, v in given.items() if v is not None})
    if config.adjust not in ADJUST_METHODS:
        raise ConfigError(f"--adjust must be one of {ADJUST_METHODS}, not {config.adjust!r}")
    table = compare_runs(
        _resolve(run_a, PREDICTIONS_FILE, workspace), _resolve(run_b, PREDICTIONS_FILE, workspace), config
    )
    if out is not None:
        write_parquet(table, out)
    _print_comparison(table)


def _resolve(path: Path, file_name: str, workspace: Path | None) -> Path:
    """A file, or a folder holding `file_name`, as given or relative to the workspace's results/ folder."""
    candidates = [path]
    if not path.is_absolute():
        candidates.append(workspace_from(workspace).root / "results" / path)
    for candidate in candidates:
        if candidate.is_dir() and any((candidate / name).is_file() for name in (file_name, RECORD_FILE)):
            return candidate  # a run folder: its task (run.json) says which tables it holds
        if candidate.is_file():
            return candidate
    raise ConfigError(f"no {file_name} at {path} (nor under the workspace's results/); run `chex probe` first")


def _fmt(estimate: float, low: float, high: float) -> str:
    import pandas as pd

    if pd.isna(estimate):
        return "undefined"
    return f"{estimate:.3f} ({low:.3f}-{high:.3f})" if pd.notna(low) else f"{estimate:.3g}"


def _print_results(results: pd.DataFrame, task: Task) -> None:
    """The task's wide metrics as one row per output (95% CI), its other rows one per line (survival: endpoint
    rows), its hidden metrics left to the file."""
    import pandas as pd
    from rich.table import Table

    classification = results[results["metric"].isin(task.wide_metrics)]
    if len(classification):
        table = Table(title="metrics (95% CI)")
        table.add_column("output")
        metrics = list(pd.unique(classification["metric"]))
        for metric in metrics:
            table.add_column(metric)
        for output, rows in classification.groupby("output", sort=False):
            by_metric = rows.set_index("metric")
            table.add_row(str(output), *[_fmt(*by_metric.loc[m, ["estimate", "ci_low", "ci_high"]]) for m in metrics])
        _out.print(table)
    survival = results[~results["metric"].isin([*task.wide_metrics, *task.hidden_metrics])]
    if len(survival):
        table = Table(title=task.name)
        for column in ("endpoint", "metric", "estimate (95% CI)"):
            table.add_column(column)
        for row in survival.itertuples():
            table.add_row(str(row.output), row.metric, _fmt(row.estimate, row.ci_low, row.ci_high))
        _out.print(table)


def _print_comparison(result: pd.DataFrame) -> None:
    import pandas as pd
    from rich.table import Table

    first = result.iloc[0]
    table = Table(title=f"A = {first['model_a']}  vs  B = {first['model_b']}  ({first['n_permutations']} permutations)")
    for column in ("output", "metric", "A", "B", "A - B", "p", "p adjusted", "DeLong p"):
        table.add_column(column)
    for row in result.itertuples():
        table.add_row(
            str(row.output),
            row.metric,
            f"{row.estimate_a:.4f}",
            f"{row.estimate_b:.4f}",
            f"{row.diff:+.4f}",
            f"{row.p_value:.4g}",
            f"{row.p_adjusted:.4g}",
            "" if pd.isna(row.delong_p) else f"{row.delong_p:.4g}",
        )
    _out.print(table)
    _out.print(first["note"])
