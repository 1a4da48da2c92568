"""`chex demo`: run the whole pipeline on a fresh synthetic workspace and print the headline table."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from pipeline.cli.app import WorkspaceOption, app, chex_command, configure_logging, table_console, workspace_from
from pipeline.cli.constants import DEMO_SIZES
from pipeline.errors import ConfigError


@app.command("demo", help="Run the whole pipeline on a fresh synthetic workspace and print the headline table.")
@chex_command
def demo_command(
    size: Annotated[str, typer.Option(help=f"Cohort and protocol size: {', '.join(DEMO_SIZES)}.")] = "small",
    seed: Annotated[int, typer.Option(help="Seed of every stage.")] = 0,
    workers: Annotated[int, typer.Option(help="Worker processes for synth, shard and embed.")] = 2,
    null: Annotated[
        bool,
        typer.Option(
            "--null",
            help="Null control: the same images with labels and outcomes drawn independently of them; every "
            "AUROC (the oracle's too) should be near 0.5 and log-rank p spread over (0, 1).",
        ),
    ] = False,
    variation: Annotated[
        bool, typer.Option("--variation", help="Synthetic cohort with acquisition variation (see `chex synth`).")
    ] = False,
    workspace: WorkspaceOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each stage's details.")] = False,
) -> None:
    configure_logging(False, quiet_level=logging.INFO if verbose else logging.WARNING)
    if size not in DEMO_SIZES:
        raise ConfigError(f"--size {size!r}: choose one of {', '.join(DEMO_SIZES)}")
    from pipeline.demo import SMOKE_TEST_NOTE, run_demo

    ws = workspace_from(workspace)
    summary = run_demo(ws, size=size, seed=seed, workers=workers, null=null, variation=variation)
    from rich.table import Table

    out = table_console()
    cohort = "SYNTHETIC null cohort: labels independent of the images" if null else "SYNTHETIC cohort"
    timings = Table(title=f"chex demo: stage timings ({cohort})")
    timings.add_column("stage")
    timings.add_column("seconds", justify="right")
    for stage, seconds in summary.seconds.items():
        timings.add_row(stage, f"{seconds:.1f}")
    timings.add_row("[bold]total", f"[bold]{summary.total_seconds:.1f}")
    out.print(timings)
    if summary.report is not None:
        for table in summary.report.headline_tables():
            out.print(table)
        if summary.report.missing:
            out.print(f"{len(summary.report.missing)} optional runs not made by the demo are listed in the report.")
        out.print(f"report: [bold]{summary.report.index}[/]")
    if size == "tiny":
        out.print(f"[bold yellow]note:[/] {SMOKE_TEST_NOTE}", highlight=False, soft_wrap=True)
