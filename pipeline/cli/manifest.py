"""`chex manifest`: turn a data set's official label files into the common manifest.

chex manifest chexpert --source train.csv --source valid.csv --root /data/chexpert
chex manifest cxrlt24 --source train_labeled.csv --source test=test_labeled.csv
chex manifest folder --root /data/padchest --source padchest
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from data_manifests.adapters import ADAPTERS, ManifestResult, make_folder_manifest, make_manifest
from pipeline.cli.app import WorkspaceOption, app, chex_command, configure_logging, console, workspace_from
from pipeline.errors import ConfigError

manifest_app = typer.Typer(
    help="Turn a data set's official label files into the common manifest (one sub-command per data set).",
    no_args_is_help=True,
)
app.add_typer(manifest_app, name="manifest")

SourceOption = Annotated[
    list[str] | None,
    typer.Option("--source", "-s", help="Official file (repeatable); SPLIT=FILE names its split (train/val/test)."),
]
FilesArgument = Annotated[list[str] | None, typer.Argument(help="More official files.", show_default=False)]
RootOption = Annotated[
    Path | None, typer.Option(help="Image root the manifest paths are relative to (checked; bare names located).")
]
OutOption = Annotated[
    Path | None, typer.Option(help="Manifest path (default <workspace>/manifests/<dataset>.parquet).")
]
SeedOption = Annotated[int, typer.Option(help="Seed of the patient-level split for data sets without official splits.")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v")]


def _register(dataset: str) -> None:
    @manifest_app.command(dataset, help=_summary(dataset))
    @chex_command
    def command(
        files: FilesArgument = None,
        source: SourceOption = None,
        root: RootOption = None,
        out: OutOption = None,
        seed: SeedOption = 0,
        verbose: VerboseOption = False,
        workspace: WorkspaceOption = None,
    ) -> None:
        configure_logging(verbose)
        _run(dataset, [*(source or []), *(files or [])], root, out, seed, workspace)


@manifest_app.command("plco", help="PLCO: image list + mortality CSVs -> manifest with survival columns.")
@chex_command
def plco_command(
    files: FilesArgument = None,
    source: SourceOption = None,
    root: RootOption = None,
    out: OutOption = None,
    seed: SeedOption = 0,
    cvd_codes: Annotated[
        str | None, typer.Option(help="Comma-separated numeric cause-of-death codes that mean CVD death.")
    ] = None,
    verbose: VerboseOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    configure_logging(verbose)
    codes = [c.strip() for c in cvd_codes.split(",") if c.strip()] if cvd_codes else []
    _run("plco", [*(source or []), *(files or [])], root, out, seed, workspace, cvd_codes=codes)


@manifest_app.command("folder", help="Walk a folder of PNG/JPEG/DICOM images into a pretraining-source manifest.")
@chex_command
def folder_command(
    root: Annotated[Path, typer.Option(help="Folder to walk recursively.")],
    source: Annotated[str, typer.Option("--source", "-s", help="Source name (the manifest's `source` column).")],
    out: Annotated[
        Path | None, typer.Option(help="Manifest path (default <workspace>/corpus/sources/<source>.parquet).")
    ] = None,
    verbose: VerboseOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    configure_logging(verbose)
    ws = workspace_from(workspace)
    out = out or ws.root / "corpus" / "sources" / f"{source}.parquet"
    result = make_folder_manifest(root, source, out)
    frame = result.frame
    views = frame["view"].fillna("unknown").value_counts().to_dict()
    console.print(
        f"{source}: {len(frame):,} images of {frame['patient_id'].nunique():,} patients; views {views}",
        highlight=False,
    )
    console.print(
        f"wrote {result.manifest_path}  (use: chex corpus build --sources {source}={out} --root {source}={root})"
    )


def _run(
    dataset: str, sources: list[str], root: Path | None, out: Path | None, seed: int, workspace, **options
) -> None:
    if not sources:
        raise ConfigError(f"chex manifest {dataset}: pass the official files with --source FILE (repeatable)")
    ws = workspace_from(workspace)
    result = make_manifest(dataset, sources, out or ws.manifest_path(dataset), root=root, seed=seed, **options)
    _report(dataset, result, root)


def _report(dataset: str, result: ManifestResult, root: Path | None) -> None:
    frame = result.frame
    splits = frame["split"].value_counts()
    counts = ", ".join(f"{s} {int(splits.get(s, 0)):,}" for s in ("train", "val", "test") if s in splits)
    console.print(
        f"{dataset}: {len(frame):,} images of {frame['patient_id'].nunique():,} patients ({counts})", highlight=False
    )
    if root is not None:
        if result.relocated:
            console.print(f"located {result.relocated:,} bare file names under {root}", highlight=False)
        if result.missing_count:
            console.print(
                f"[yellow]warning:[/] {result.missing_count:,} image file(s) not found under {root}, e.g. "
                + ", ".join(result.missing_examples),
                highlight=False,
            )
        else:
            console.print(f"all images found under {root}", highlight=False)
    console.print(f"wrote {result.manifest_path} and {result.card_path}", highlight=False)


def _summary(dataset: str) -> str:
    """The first paragraph of the adapter module's docstring."""
    doc = (sys.modules[ADAPTERS[dataset].__module__].__doc__ or dataset).strip()
    return doc.split("\n\n")[0].replace("\n", " ")


for _dataset in ADAPTERS:
    if _dataset != "plco":
        _register(_dataset)
