"""`chex embed` (run a frozen backbone over every image once, cache tokens) and `chex store info`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import (
    DaskOption,
    NoProgressAlias,
    OverwriteOption,
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
from pipeline.cli.checks import at_least, checkpoint_path, datasets_in
from pipeline.errors import ConfigError, StoreError
from pipeline.workspace import check_name, out_file, out_folder

STORE_MARKERS = ("zarr.json",)  # a folder holding this is a feature store (pipeline/store/layout.py)

store_app = typer.Typer(help="Inspect feature stores.", no_args_is_help=True)
app.add_typer(store_app, name="store")


@app.command("embed", help="Run a frozen backbone over every image once; cache last-layer tokens in Zarr.")
@chex_command
def embed_command(
    datasets: Annotated[list[str] | None, typer.Argument(help="Data sets (default: all in the workspace).")] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint file or release folder (families: `chex backbones`).")
    ] = None,
    random_init: Annotated[
        str | None, typer.Option(help="Built-in architecture at random init, e.g. vit_small_patch16.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of --random-init weights.")] = 0,
    backbone: Annotated[
        str | None, typer.Option(help="Store name under features/ (default: checkpoint folder).")
    ] = None,
    image_size: Annotated[int | None, typer.Option(help="Input size (positional embeddings interpolated).")] = None,
    num_heads: Annotated[int | None, typer.Option(help="Attention heads when not dim/64.")] = None,
    family: Annotated[
        str | None, typer.Option(help="Backbone family when not recognised from the files, e.g. timm:MODEL_NAME.")
    ] = None,
    layers: Annotated[int, typer.Option(help="Number of last blocks whose tokens are kept.")] = 4,
    dtype: Annotated[
        str, typer.Option(help="float16; int8 patch tokens (per-token scale, CLS float16); float32 (beyond float16).")
    ] = "float16",
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
    patch_rank: Annotated[
        int, typer.Option("--rank", help="Project patch tokens on R principal directions (fitted on train images).")
    ] = 0,
    pool: Annotated[int, typer.Option(help="Average KxK neighbourhoods of the patch grid (1: none).")] = 1,
    fit_images: Annotated[int, typer.Option(help="--rank: train images the basis is fitted on (0: all).")] = 8192,
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
    root = pick(root, image_root, "--root", "--image-root")
    out = pick(out, store, "--out", "--store")
    ws = workspace_from(workspace)
    names = datasets or ws.datasets()
    at_least(layers=(layers, 1), train_views=(train_views, 1), batch_size=(batch_size, 1), unit_rows=(unit_rows, 0),
             workers=(workers, 0), rank=(patch_rank, 0), pool=(pool, 1), fit_images=(fit_images, 0))  # fmt: skip
    _check_embed_arguments(ws, names, checkpoint, random_init, backbone, manifest, family)
    if out is not None:
        out = out_folder(ws, out, "features", "feature store", STORE_MARKERS)
    if manifest is not None:
        ws = _with_manifest(ws, names, manifest)
    from pipeline.embed import EmbedOptions, embed_datasets
    from pipeline.embed.distributed import torchrun_rank

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
        patch_rank=patch_rank,
        pool=pool,
        fit_images=fit_images,
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
        family=family,
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


def _check_embed_arguments(ws, names: list[str], checkpoint: Path | None, random_init: str | None,
                           backbone: str | None, manifest: Path | None, family: str | None) -> None:  # fmt: skip
    """The argument errors embed can find before it loads torch (benchmarks/bench_startup.py)."""
    if (checkpoint is None) == (random_init is None):
        raise ConfigError("give exactly one of --checkpoint PATH or --random-init PRESET")
    for name in (backbone, random_init):
        if name is not None:
            check_name(name, "backbone")
    if checkpoint is not None:  # path and release-format errors before torch is imported
        from pipeline.backbone.registry import precheck

        checkpoint_path(precheck(checkpoint, family).weights)
    if not names:
        raise ConfigError(f"no data sets given and no manifests in {ws.manifests_dir}")
    if manifest is None:
        datasets_in(ws, names, "`chex shard {name}` (optional) and this embed")
    else:
        for name in names:
            check_name(name, "data set")


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
    overwrite: OverwriteOption = False,
    kinds: Annotated[str, typer.Option("--kinds", help="Comma-separated: cls, pooled, patch.")] = "cls,pooled",
    view: Annotated[int, typer.Option(help="Stored view (0 = the plain eval view).")] = 0,
    workspace: WorkspaceOption = None,
) -> None:
    at_least(view=(view, 0))
    ws = workspace_from(workspace)
    if out is not None:
        out_file(ws, out, overwrite=overwrite)
    from pipeline.api import open_store

    if name is not None and (Path(name) / "zarr.json").is_file():
        store = open_store(Path(name))
    else:
        store = open_store(ws.root, backbone=name)
    if view:
        store = store.with_view(view)
    label = name if name and "/" not in name else store.path.name
    target = out_file(ws, out or ws.root / "exports" / f"{label}.{fmt}", overwrite=overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    path = store.export(target, fmt, [k.strip() for k in kinds.split(",") if k.strip()])
    console.print(f"wrote {path}: {len(store)} images, {store.n_layers} layers x {store.dim} dims", highlight=False)


@store_app.command("info", help="Shape, dtype, size on disk, provenance and completeness of a feature store.")
@chex_command
def store_info_command(
    path: Annotated[
        Path | None,
        typer.Argument(help="Store folder, or a backbone name in the workspace (default: the default backbone)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    from pipeline.workspace_stores import choose_store

    ws = workspace_from(workspace)
    if path is None:
        path = ws.features_dir(choose_store(ws, None))
    elif not path.exists() and len(path.parts) == 1:
        path = ws.features_dir(check_name(str(path), "backbone"))
    _print_info(path, as_json)


@store_app.command(
    "verify",
    help="Check every finished unit of a store (files, sizes, sha256); the next `chex embed` redoes damaged units.",
)
@chex_command
def store_verify_command(
    name: Annotated[str | None, typer.Argument(help="Store folder or backbone name (default: every store).")] = None,
    workspace: WorkspaceOption = None,
) -> None:
    from pipeline.store.verify import verify_store

    ws = workspace_from(workspace)
    if name is None:
        paths = sorted(p.parent for p in ws.root.glob("features/*/zarr.json"))
        if not paths:
            raise ConfigError(f"no feature stores under {ws.root / 'features'}; run `chex embed` first")
    else:
        paths = [Path(name) if Path(name).exists() else ws.features_dir(name)]
    damaged, repairs = [], set()
    for path in paths:
        report = verify_store(path)
        if not report.ok:
            repairs.add(f"`{report.repair}`")
        typer.echo(
            f"{path}: {len(report.intact)} units intact, {len(report.damaged)} damaged, "
            f"{len(report.unverifiable)} unverifiable, {len(report.pending)} not finished"
        )
        if report.unverifiable:
            typer.echo(
                f"  unverifiable (written before chex recorded unit files): {_names(report.unverifiable)}; "
                "re-embed into a new store to make them checkable"
            )
        if report.projection:
            typer.echo(f"  projection damaged: {'; '.join(report.projection)}; the basis and every row were taken back")
        damaged += [f"{path.name}/{unit} ({'; '.join(problems)})" for unit, problems in report.damaged.items()]
    if damaged or repairs:
        raise StoreError(
            f"{len(damaged)} damaged units: {', '.join(damaged)}; their rows are hidden now, and a rerun of the "
            f"same {' or '.join(sorted(repairs))} writes exactly these units again"
        )


def _names(units: list[str], shown: int = 10) -> str:
    more = f" and {len(units) - shown} more" if len(units) > shown else ""
    return ", ".join(units[:shown]) + more


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
        *(f"{p:<11} {shape} {info['part_dtypes'][p]}" for p, shape in info["shapes"].items()),
        f"on disk     {info['bytes_on_disk'] / 1e6:.1f} MB ({info['bytes_per_row'] / 1e3:.1f} kB per row)",
        f"per image   {info['bytes_per_image'] / 1e3:.1f} kB uncompressed",
        *_projection_lines(info),
        f"chunks      {info['chunk_rows']} rows per chunk, {info['unit_rows']} rows per unit (Zarr shard)",
        f"complete    {info['complete']} ({info['units_done']}/{info['units_planned']} units done)"
        + (f"; damaged: {_names(info['damaged_units'])} (run `chex store verify`)" if info["damaged_units"] else ""),
        f"backbone    {prov.get('backbone_name')}  {json.dumps(prov.get('backbone'))}",
        f"checkpoint  {prov.get('checkpoint')}  sha256 {prov.get('checkpoint_sha256')}",
        f"family      {prov.get('family', '(not recorded: a ViT store)')}  patch grid {prov.get('patch_grid', '-')}",
        f"layers      {prov.get('layers')}",
        f"preprocess  {json.dumps(prov.get('preprocessing'))}",
        f"chex        {prov.get('chex_version')}  created {prov.get('created')}",
    ]
    typer.echo("\n".join(lines))


def _projection_lines(info: dict) -> list[str]:
    if not info["rank"] and info["pool"] == 1:
        return ["patch       full tokens (no projection, no pooling)"]
    lines = [f"pool        {info['pool']}x{info['pool']} average of the patch grid"] if info["pool"] > 1 else []
    if info["rank"]:
        fit = info["provenance"].get("projection", {}).get("fit", {})
        lines.append(
            f"projection  rank R={info['rank']}, variance kept {info['variance_kept']:.4f}, "
            f"{info['provenance'].get('projection', {}).get('coordinates', 'raw')} coordinates "
            f"(fitted on {fit.get('images')} {fit.get('split')} images, {fit.get('tokens')} tokens)"
        )
    return lines


@store_app.command("compress", help="Make a projected (--rank) and/or pooled (--pool) store from a full one.")
@chex_command
def store_compress_command(
    source: Annotated[Path, typer.Argument(help="Full store folder, or a backbone name in the workspace.")],
    out: Annotated[Path, typer.Option(help="New store: a name (features/NAME) or a new folder.")],
    patch_rank: Annotated[int, typer.Option("--rank", help="Principal directions kept (0: full width).")] = 0,
    dtype: Annotated[
        str, typer.Option(help="float16; int8 patch tokens (per-token scale, CLS float16); float32 (beyond float16).")
    ] = "float16",
    pool: Annotated[int, typer.Option(help="Average KxK neighbourhoods of the patch grid (1: none).")] = 1,
    dataset: Annotated[
        str | None, typer.Option(help="Data sets whose train split fits the basis, comma-separated (default: all).")
    ] = None,
    fit_images: Annotated[int, typer.Option(help="Train images the basis is fitted on (0: all).")] = 8192,
    unit_rows: Annotated[
        int, typer.Option(help="Rows per write unit of the new store; 0: chosen from the row size.")
    ] = 0,
    verbose: VerboseOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    configure_logging(verbose)
    at_least(rank=(patch_rank, 0), pool=(pool, 1), fit_images=(fit_images, 0), unit_rows=(unit_rows, 0))
    ws = workspace_from(workspace)
    if not source.exists() and len(source.parts) == 1:
        source = ws.features_dir(check_name(str(source), "backbone"))
    out = out_folder(ws, out, "features", "feature store", STORE_MARKERS)
    names = [t.strip() for t in dataset.split(",") if t.strip()] if dataset else None
    if names:
        datasets_in(ws, names, "rerun this compress")
    from pipeline.embed.compress import compress_store, train_image_ids

    summary = compress_store(source, out, train_image_ids(ws, names), patch_rank, dtype=dtype, pool=pool,
                             fit_images=fit_images, unit_rows=unit_rows, fit_datasets=names)  # fmt: skip
    kept = "" if summary.variance_kept is None else f", variance kept {summary.variance_kept:.4f}"
    console.print(
        f"{summary.store_path}: {summary.rows} rows (this run wrote {summary.written}); rank {summary.rank}, "
        f"pool {summary.pool}{kept}; {summary.bytes_per_image / 1e3:.1f} kB per image uncompressed",
        highlight=False,
    )
