"""`chex shard`: pack a data set's images + manifest into webdataset tar shards."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import (
    DaskOption,
    NoProgressAlias,
    QuietOption,
    VerboseOption,
    WorkspaceOption,
    app,
    chex_command,
    configure_logging,
    console,
    workspace_from,
)
from pipeline.errors import ConfigError
from pipeline.workspace import out_folder

SHARD_MARKERS = ("index.parquet", "*.tar", "*.tar.tmp", "quarantine.csv")  # a shard set holds one (pipeline/shard/)

_UNITS = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30}


@app.command("shard", help="Pack images + a manifest into webdataset tar shards (resumable).")
@chex_command
def shard_command(
    dataset: Annotated[str, typer.Argument(help="Data set name (its manifest, images and shards folder).")],
    root: Annotated[
        Path | None, typer.Option(help="Image root (default: the root `chex manifest` recorded, else images/DATASET).")
    ] = None,
    manifest: Annotated[
        Path | None, typer.Option(help="Manifest (default <workspace>/manifests/DATASET.parquet).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Shard folder (default <workspace>/shards/DATASET).")] = None,
    shard_size: Annotated[str, typer.Option(help="Target shard size, e.g. 1GB, 500MB, 64MiB.")] = "1GB",
    samples_per_shard: Annotated[int | None, typer.Option(help="At most this many images per shard.")] = None,
    max_side: Annotated[
        int | None, typer.Option(help="Downscale images whose long side exceeds this (Lanczos, dtype kept).")
    ] = None,
    workers: Annotated[int, typer.Option(help="Worker processes (or dask workers for --dask local).")] = 1,
    dask: DaskOption = None,
    verify: Annotated[str, typer.Option(help="Check reused shards by 'size' or full 'sha256'.")] = "size",
    min_readable: Annotated[
        float, typer.Option(help="Refuse (exit 2) when fewer than this fraction of the images exist.")
    ] = 0.5,
    voi: Annotated[
        str,
        typer.Option(help="DICOM: 'auto' applies the file's VOI LUT / WindowCenter-Width; 'none' keeps stored values."),
    ] = "auto",
    quiet: QuietOption = False,
    no_progress: NoProgressAlias = False,
    verbose: VerboseOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from pipeline.cards import card_beside
    from pipeline.shard.dataset import shard_dataset

    configure_logging(verbose)
    if dask and not verbose:  # dask's scheduler/worker chatter is noise unless asked for
        import distributed  # noqa: F401  (importing it installs its logging levels, which we then lower)

        logging.getLogger("distributed").setLevel(logging.WARNING)
    ws = workspace_from(workspace)
    if out is not None:
        out = out_folder(ws, out, "shards", "shard set", SHARD_MARKERS)
    manifest = manifest or ws.manifest_path(dataset)
    summary = shard_dataset(
        manifest,
        root or ws.image_root(dataset),
        out or ws.shards_dir(dataset),
        dataset,
        target_shard_bytes=parse_size(shard_size),
        samples_per_shard=samples_per_shard,
        max_side=max_side,
        workers=workers,
        executor="dask" if dask else "process",
        dask_address=dask,
        progress=not (quiet or no_progress),
        verify=verify,
        min_readable=min_readable,
        card=card_beside(manifest),
        voi=_voi(voi),
    )
    console.print(
        f"[bold]{dataset}[/]: {summary.n_shards} shards, {summary.n_samples:,} samples, "
        f"{summary.n_quarantined:,} quarantined, {summary.megabytes:,.1f} MB at {summary.out_dir} "
        f"({summary.written} written, {summary.skipped} reused; {summary.images_per_second:,.1f} images/s)",
        highlight=False,
    )
    if summary.n_missing:
        console.print(
            f"[yellow]{summary.n_missing:,} missing file(s)[/] under the image root, e.g. "
            + ", ".join(summary.missing_examples),
            highlight=False,
        )
    others = {k: v for k, v in summary.reasons.items() if k != "missing file"}
    if others:
        shown = "; ".join(f"{v} x {k}" for k, v in list(others.items())[:5])
        console.print(f"[yellow]unreadable images[/] (see quarantine.csv): {shown}", highlight=False)


def parse_size(text: str) -> float:
    """'1GB' -> 1e9, '64MiB' -> 67108864, '5e8' -> 5e8."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS or float(match.group(1)) <= 0:
        raise ConfigError(f"--shard-size {text!r}: expected a positive size such as 1GB, 500MB or 64MiB")
    return float(match.group(1)) * _UNITS[unit]


def _voi(text: str) -> str:
    if text not in ("auto", "none", "window"):
        raise ConfigError(f"--voi {text!r}: choose auto (apply the DICOM VOI LUT / window when present) or none")
    return text
