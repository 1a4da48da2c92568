"""`chex stats` and `chex compare`: bootstrap CIs of a run's predictions, paired tests between two runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from pipeline.cli.app import WorkspaceOption, app, chex_command, workspace_from
from pipeline.cli.constants import ADJUST_METHODS
from pipeline.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

PREDICTIONS_FILE = "predictions.parquet"
SURVIVAL_FILE = "survival.parquet"
RESULTS_FILE = "results.parquet"
_out = Console()


@app.command("stats", help="Metrics with bootstrap CIs (and survival statistics) of a run's predictions.")
@chex_command
def stats_command(
    predictions: Annotated[Path, typer.Argument(help="predictions.parquet, or a run folder holding it.")],
    survival: Annotated[
        Path | None, typer.Option("--survival", help="survival.parquet (default: the run folder's, if any).")
    ] = None,
    resamples: Annotated[int, typer.Option("--resamples", help="Bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the resampling.")] = 0,
    ci: Annotated[str, typer.Option("--ci", help="CI method: percentile or bca.")] = "percentile",
    by_image: Annotated[bool, typer.Option("--by-image", help="Resample images, not patients.")] = False,
    stratified: Annotated[bool, typer.Option("--stratified", help="Stratified bootstrap.")] = False,
    horizons: Annotated[
        list[float] | None, typer.Option("--horizon", help="Time-dependent AUROC horizon (years); repeatable.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Results Parquet (default: results.parquet beside the input).")
    ] = None,
    workspace: WorkspaceOption = None,
) -> None:
    import pandas as pd

    from pipeline.stats.evaluate import evaluate_predictions, evaluate_survival

    pred_path = _resolve(predictions, PREDICTIONS_FILE, workspace)
    results = evaluate_predictions(
        _read(pred_path),
        n_resamples=resamples,
        seed=seed,
        ci_method=ci,
        cluster_column=None if by_image else "patient_id",
        stratified=stratified,
    )
    survival_path = _resolve(survival, SURVIVAL_FILE, workspace) if survival else pred_path.parent / SURVIVAL_FILE
    if survival_path.is_file():
        results = pd.concat([results, evaluate_survival(_read(survival_path), horizons=horizons)], ignore_index=True)
    target = out or pred_path.parent / RESULTS_FILE
    _write_atomic(results, target)
    _print_results(results)
    _out.print(f"wrote {len(results)} rows to {target}")


@app.command("compare", help="Paired permutation test (and DeLong) between two runs on the same test images.")
@chex_command
def compare_command(
    run_a: Annotated[Path, typer.Argument(help="Run folder or predictions.parquet of model A.")],
    run_b: Annotated[Path, typer.Argument(help="Run folder or predictions.parquet of model B.")],
    permutations: Annotated[int, typer.Option("--permutations", help="Number of permutations.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the permutations.")] = 0,
    by_image: Annotated[bool, typer.Option("--by-image", help="Swap per image, not per patient.")] = False,
    adjust: Annotated[str, typer.Option("--adjust", help=f"Multiple-comparison method: {ADJUST_METHODS}.")] = "holm",
    out: Annotated[Path | None, typer.Option("--out", help="Write the table (.parquet or .csv).")] = None,
    workspace: WorkspaceOption = None,
) -> None:
    if adjust not in ADJUST_METHODS:
        raise ConfigError(f"--adjust must be one of {ADJUST_METHODS}, not {adjust!r}")
    from pipeline.stats.evaluate import compare_predictions

    table = compare_predictions(
        _read(_resolve(run_a, PREDICTIONS_FILE, workspace)),
        _read(_resolve(run_b, PREDICTIONS_FILE, workspace)),
        n_permutations=permutations,
        seed=seed,
        cluster_column=None if by_image else "patient_id",
        adjust=adjust,
    )
    if out is not None:
        _write_atomic(table, out)
    _print_comparison(table)


def _resolve(path: Path, file_name: str, workspace: Path | None) -> Path:
    """A file, a folder holding `file_name`, or either relative to the workspace's results/ folder."""
    candidates = [path]
    if not path.is_absolute():
        candidates.append(workspace_from(workspace).root / "results" / path)
    for candidate in candidates:
        if candidate.is_dir() and (candidate / file_name).is_file():
            return candidate / file_name
        if candidate.is_file():
            return candidate
    raise ConfigError(f"no {file_name} at {path} (nor under the workspace's results/); run `chex probe` first")


def _read(path: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise ConfigError(f"cannot read {path} as Parquet: {exc}") from exc


def _write_atomic(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".csv":
        frame.to_csv(tmp, index=False)
    else:
        frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _fmt(estimate: float, low: float, high: float) -> str:
    import pandas as pd

    if pd.isna(estimate):
        return "undefined"
    return f"{estimate:.3f} ({low:.3f}-{high:.3f})" if pd.notna(low) else f"{estimate:.3g}"


def _print_results(results: pd.DataFrame) -> None:
    import pandas as pd
    from rich.table import Table

    classification = results[results["metric"].isin(["auroc", "auprc", "f1", "prevalence"])]
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
    survival = results[~results["metric"].isin(["auroc", "auprc", "f1", "sensitivity", "specificity", "prevalence"])]
    if len(survival):
        table = Table(title="survival")
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
