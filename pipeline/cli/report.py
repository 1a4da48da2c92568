"""`chex report`: Write the benchmark tables and figures a paper needs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import WorkspaceOption, app, chex_command, table_console, workspace_from
from pipeline.cli.constants import ADJUST_METHODS, REPORT_FORMATS
from pipeline.errors import ConfigError

_out = table_console(highlight=False)


@app.command("report", help="Write the benchmark tables and figures a paper needs.")
@chex_command
def report_command(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Results folders, run folders or their Parquet files (default: the workspace's results/)."),
    ] = None,
    results: Annotated[list[Path] | None, typer.Option("--results", "-r", help="Same as PATHS; repeatable.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default: <workspace>/reports).")
    ] = None,
    formats: Annotated[
        str, typer.Option("--format", help="Table formats, comma-separated: md,csv,tex.")
    ] = "md,csv,tex",
    resamples: Annotated[
        int, typer.Option("--resamples", help="Bootstrap resamples for CIs the report computes.")
    ] = 1000,
    permutations: Annotated[
        int, typer.Option("--permutations", help="Permutations of the best-vs-other paired tests.")
    ] = 1000,
    adjust: Annotated[str, typer.Option("--adjust", help=f"Multiple-comparison method: {ADJUST_METHODS}.")] = "holm",
    attention_findings: Annotated[
        list[str] | None,
        typer.Option(
            "--attention-findings", help="Findings whose GLoRI maps to overlay (comma-separated or repeated)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of resampling and permutations.")] = 0,
    image_root: Annotated[
        list[str] | None,
        typer.Option(
            "--image-root", help="Where attention overlays find test images: DIR or DATASET=DIR (repeatable)."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    if adjust not in ADJUST_METHODS:
        raise ConfigError(f"--adjust must be one of {ADJUST_METHODS}, not {adjust!r}")
    if resamples < 1 or permutations < 1:
        raise ConfigError("--resamples and --permutations must be at least 1")
    wanted = [f.strip().lower() for f in formats.split(",") if f.strip()]
    if not wanted or any(f not in REPORT_FORMATS for f in wanted):
        raise ConfigError(f"--format takes a comma-separated list of {', '.join(REPORT_FORMATS)}; got {wanted}")
    roots = _image_roots(image_root or [])
    ws = workspace_from(workspace)
    inputs = [*(paths or []), *(results or [])]
    _check_inputs(ws, inputs)
    from pipeline.report import write_report  # matplotlib and friends load only when a report is made

    findings = [f.strip() for item in attention_findings or [] for f in item.split(",") if f.strip()] or None
    summary = write_report(
        ws,
        out_dir=out,
        formats=tuple(formats.split(",")),
        progress=not quiet,
        results=inputs or None,
        n_resamples=resamples,
        n_permutations=permutations,
        attention_findings=findings,
        adjust=adjust,
        seed=seed,
        image_roots=roots,
    )
    for table in summary.headline_tables():
        _out.print(table)
    for caution in summary.cautions:
        _out.print(f"[bold yellow]caution:[/] {caution}", soft_wrap=True, highlight=False)
    if summary.missing:
        _out.print(f"[bold yellow]missing inputs ({len(summary.missing)}):[/]")
        for message in summary.missing:
            _out.print(f"  - {message}", markup=False, soft_wrap=True)
    n_tables = len(summary.tables)
    n_figures = len(summary.figures)
    _out.print(f"wrote {n_tables} tables and {n_figures} figures; open {summary.index}", markup=False)


def _check_inputs(ws, inputs: list[Path]) -> None:
    """A report needs probe results: refuse (exit 2) a missing input or a workspace without any run."""
    missing = [p for p in inputs if not p.exists()]
    if missing:
        raise ConfigError(f"no such results folder or file: {', '.join(map(str, missing))}")
    results = ws.root / "results"
    if not inputs and not any(results.rglob("*.parquet")):
        raise ConfigError(
            f"no probe results in {results}: nothing to report. Run `chex probe` first (or `chex demo` for the "
            "whole pipeline on synthetic data), or give results folders: chex report PATH"
        )


def _image_roots(specs: list[str]) -> dict[str, Path]:
    """--image-root DIR (every data set) or DATASET=DIR, repeatable."""
    roots = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        key, path = (name.strip(), Path(folder)) if sep and name and "/" not in name else ("", Path(spec))
        if not path.is_dir():
            raise ConfigError(f"--image-root {spec!r}: {path} is not a folder")
        roots[key] = path
    return roots
