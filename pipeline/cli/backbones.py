"""`chex backbones`: the backbone families chex loads, the files each expects and its preprocessing; with a
PATH, which family recognises it (or what was found instead)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipeline.cli.app import VerboseOption, app, chex_command, configure_logging, console, table_console


@app.command("backbones", help="List the backbone families (files, preprocessing); with PATH: which family it is.")
@chex_command
def backbones_command(
    path: Annotated[Path | None, typer.Argument(help="A checkpoint file or release folder to recognise.")] = None,
    verbose: VerboseOption = False,
) -> None:
    configure_logging(verbose)
    from pipeline.backbone.found import inspect_path
    from pipeline.backbone.registry import all_families, recognise

    if path is not None:
        found = inspect_path(path)
        family = recognise(found)
        console.print(f"{path}: family {family.name} ({family.summary}); weights {found.weights}", highlight=False)
        return
    table = Table(title="backbone families (`chex embed --checkpoint PATH` recognises them)")
    for column in ("family", "what", "expects", "preprocessing", "follows"):
        table.add_column(column, overflow="fold")
    for f in all_families():
        table.add_row(f.name, f.summary, f.expects, f.preprocessing, f.follows)
    table_console().print(table)
