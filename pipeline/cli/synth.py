"""`chex synth`: generate the synthetic CXR cohort (cxrlt24, chexpert, shenzhen, montgomery, jsrt, plco)."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from pipeline.cli.app import WorkspaceOption, app, chex_command, configure_logging, console, workspace_from
from pipeline.cli.constants import SYNTH_DATASETS as DATASETS


@app.command("synth", help="Generate the synthetic CXR cohort (cxrlt24, chexpert, shenzhen, montgomery, jsrt, plco).")
@chex_command
def synth_command(
    size: Annotated[str, typer.Option(help="tiny (CI, 64 px), small (demo, 128 px) or medium (10x small).")] = "small",
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same bytes.")] = 0,
    null: Annotated[bool, typer.Option("--null", help="Labels and survival independent of the pixels.")] = False,
    variation: Annotated[
        bool,
        typer.Option(
            "--variation",
            help="Label-independent acquisition variation (habitus, positioning, exposure gradients, collimation, "
            "markers, buttons); off by default (it costs CPU-scale frozen features more than pretraining gains).",
        ),
    ] = False,
    datasets: Annotated[
        str | None, typer.Option(help=f"Comma-separated subset of {','.join(DATASETS)} (default all).")
    ] = None,
    image_size: Annotated[int | None, typer.Option(help="Image side in pixels (default from --size).")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes rendering images.")] = 1,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    import pandas as pd
    from rich.table import Table

    from pipeline.synth import generate_cohort

    configure_logging(verbose)
    ws = workspace_from(workspace)
    names = [d.strip() for d in datasets.split(",") if d.strip()] if datasets else None
    started = time.perf_counter()
    manifests = generate_cohort(
        ws,
        size=size,
        seed=seed,
        null=null,
        datasets=names,
        image_size=image_size,
        workers=workers,
        progress=True,
        variation=variation,
    )
    table = Table(title=f"synthetic cohort ({size}{', NULL labels' if null else ''}, seed {seed}) in {ws.root}")
    for column in ("dataset", "images", "patients", "train", "val", "test"):
        table.add_column(column, justify="left" if column == "dataset" else "right")
    for name, path in manifests.items():
        frame = pd.read_parquet(path, columns=["patient_id", "split"])
        splits = frame["split"].value_counts()
        table.add_row(
            name,
            f"{len(frame):,}",
            f"{frame['patient_id'].nunique():,}",
            *(f"{int(splits.get(s, 0)):,}" for s in ("train", "val", "test")),
        )
    console.print(table)
    console.print(f"done in {time.perf_counter() - started:.1f} s (SYNTHETIC data)", highlight=False)
