"""`chex embed` (run a frozen backbone over every image once, cache tokens) and `chex store info`."""

from __future__ import annotations

import json
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
    pick,
    workspace_from,
)
from pipeline.errors import ConfigError

store_app = typer.Typer(help="Inspect feature stores.", no_args_is_help=True)
app.add_typer(store_app, name="store")


@app.command("embed", help="Run a frozen backbone over every image once; cache last-layer tokens in Zarr.")
@chex_command
def embed_command(
    datasets: Annotated[list[str] | None, typer.Argument(help="Data sets (default: all in the workspace).")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="chex / DINOv2 / CheXFound / timm / MAE checkpoint.")] = None,
    random_init: Annotated[
        str | None, typer.Option(help="Built-in architecture at random init, e.g. vit_small_patch16.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of --random-init weights.")] = 0,
    backbone: Annotated[
        str | None, typer.Option(help="Store name under features/ (default: checkpoint folder).")
    ] = None,
    image_size: Annotated[int | None, typer.Option(help="Input size (positional embeddings interpolated).")] = None,
    num_heads: Annotated[int | None, typer.Option(help="Attention heads when not dim/64.")] = None,
    layers: Annotated[int, typer.Option(help="Number of last blocks whose tokens are kept.")] = 4,
    dtype: Annotated[str, typer.Option(help="float16 or int8 (per-token scale).")] = "float16",
    train_views: Annotated[int, typer.Option(help="Views per training image (view 0 = plain eval view).")] = 1,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    unit_rows: Annotated[
        int, typer.Option(help="Rows per write unit (Zarr shard) of a new store; 0: chosen from the row size.")
    ] = 0,
    workers: Annotated[int, typer.Option(help="DataLoader (or local dask) worker processes.")] = 2,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 (default: best available).")] = None,
    dask: DaskOption = None,
    source: Annotated[str, typer.Option(help="auto, shards or manifest.")] = "auto",
    root: Annotated[
        Path | None, typer.Option(help="Image root for manifest paths (default: the root `chex manifest` recorded).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Store folder (default: features/<backbone>/).")] = None,
    manifest: Annotated[
        Path | None, typer.Option(help="Manifest of the one data set given (default manifests/DATASET.parquet).")
    ] = None,
    image_root: Annotated[Path | None, typer.Option("--image-root", hidden=True)] = None,
    store: Annotated[Path | None, typer.Option("--store", hidden=True)] = None,
    info: Annotated[Path | None, typer.Option("--info", help="Print a store's summary and exit.")] = None,
    quiet: QuietOption = False,
    no_progress: NoProgressAlias = False,
    verbose: VerboseOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    configure_logging(verbose)
    if info is not None:
        _print_info(info)
        return
    from pipeline.embed import EmbedOptions, embed_datasets
    from pipeline.embed.distributed import torchrun_rank

    root = pick(root, image_root, "--root", "--image-root")
    out = pick(out, store, "--out", "--store")
    ws = workspace_from(workspace)
    names = datasets or ws.datasets()
    if not names:
        raise ConfigError(f"no data sets given and no manifests in {ws.manifests_dir}")
    if manifest is not None:
        ws = _with_manifest(ws, names, manifest)
    rank, world = torchrun_rank()
    options = EmbedOptions(
        n_layers=layers,
        dtype=dtype,
        train_views=train_views,
        batch_size=batch_size,
        unit_rows=unit_rows,
        workers=workers,
        device=device,
        dask=dask,
        rank=rank,
        world_size=world,
        progress=rank == 0 and not (quiet or no_progress),
    )
    summary = embed_datasets(
        ws,
        names,
        checkpoint,
        backbone,
        random_init=random_init,
        seed=seed,
        image_size=image_size,
        num_heads=num_heads,
        source=source,
        image_root=root,
        store_path=out,
        options=options,
    )
    if rank == 0:
        console.print(
            f"{summary.store_path}: {summary.rows} rows ({summary.images} images); this run embedded "
            f"{summary.embedded} rows ({summary.images_per_s:.1f}/s), skipped {summary.skipped} already stored"
            + (f"; {summary.pending_units} units unfinished" if summary.pending_units else ""),
            highlight=False,
        )


def _with_manifest(ws, names: list[str], manifest: Path):
    """A one-off workspace view in which DATASET's manifest is `manifest` (embed reads manifests by name)."""
    from pipeline.workspace import Workspace

    if len(names) != 1:
        raise ConfigError("--manifest applies to one data set: name exactly one")
    if not manifest.is_file():
        raise ConfigError(f"--manifest {manifest}: no such file")

    class _OneManifest(Workspace):
        def manifest_path(self, dataset: str) -> Path:
            return manifest if dataset == names[0] else super().manifest_path(dataset)

    return _OneManifest(ws.root)


@store_app.command("export", help="Write a store's tokens (complete rows only) to .npz or Parquet.")
@chex_command
def store_export_command(
    name: Annotated[str | None, typer.Argument(help="Backbone name in the workspace, or a store folder.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="npz or parquet.")] = "npz",
    out: Annotated[Path | None, typer.Option(help="Output file (default <workspace>/exports/NAME.FORMAT).")] = None,
    kinds: Annotated[str, typer.Option("--kinds", help="Comma-separated: cls, pooled, patch.")] = "cls,pooled",
    view: Annotated[int, typer.Option(help="Stored view (0 = the plain eval view).")] = 0,
    workspace: WorkspaceOption = None,
) -> None:
    from pipeline.api import open_store

    ws = workspace_from(workspace)
    if name is not None and (Path(name) / "zarr.json").is_file():
        store = open_store(Path(name))
    else:
        store = open_store(ws.root, backbone=name)
    if view:
        store = store.with_view(view)
    label = name if name and "/" not in name else store.path.name
    target = out or ws.root / "exports" / f"{label}.{fmt}"
    target.parent.mkdir(parents=True, exist_ok=True)
    path = store.export(target, fmt, [k.strip() for k in kinds.split(",") if k.strip()])
    console.print(f"wrote {path}: {len(store)} images, {store.n_layers} layers x {store.dim} dims", highlight=False)


@store_app.command("info", help="Shape, dtype, size on disk, provenance and completeness of a feature store.")
@chex_command
def store_info_command(
    path: Annotated[Path, typer.Argument(help="Store folder, or a backbone name in the workspace.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    if not path.exists() and len(path.parts) == 1:
        path = workspace_from(workspace).features_dir(str(path))
    _print_info(path, as_json)


def _print_info(path: Path, as_json: bool = False) -> None:
    from pipeline.store import FeatureStore

    info = FeatureStore.open(path).info()
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    prov = info["provenance"]
    lines = [
        f"store       {info['path']}",
        f"rows        {info['rows']} ({info['images']} images, up to {info['max_views']} views)",
        *(f"{p:<11} {shape} {info['dtype']}" for p, shape in info["shapes"].items()),
        f"on disk     {info['bytes_on_disk'] / 1e6:.1f} MB ({info['bytes_per_row'] / 1e3:.1f} kB per row)",
        f"chunks      {info['chunk_rows']} rows per chunk, {info['unit_rows']} rows per unit (Zarr shard)",
        f"complete    {info['complete']} ({info['units_done']}/{info['units_planned']} units done)",
        f"backbone    {prov.get('backbone_name')}  {json.dumps(prov.get('backbone'))}",
        f"checkpoint  {prov.get('checkpoint')}  sha256 {prov.get('checkpoint_sha256')}",
        f"layers      {prov.get('layers')}",
        f"preprocess  {json.dumps(prov.get('preprocessing'))}",
        f"chex        {prov.get('chex_version')}  created {prov.get('created')}",
    ]
    typer.echo("\n".join(lines))
