"""`chex corpus`: build the pretraining corpus (CXR-1M and subsets) and shard it source-balanced."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.cli.app import WorkspaceOption, app, chex_command, configure_logging, console, workspace_from
from pipeline.cli.constants import NEAR_THRESHOLD as DEFAULT_NEAR_THRESHOLD
from pipeline.errors import ConfigError
from pipeline.workspace import Workspace

if TYPE_CHECKING:
    from pipeline.corpus.build import EvalInput, SourceInput

corpus_app = typer.Typer(
    help="Build the pretraining corpus (CXR-1M and subsets) and shard it source-balanced.",
    no_args_is_help=True,
)
app.add_typer(corpus_app, name="corpus")


@corpus_app.command("build")
@chex_command
def build_command(
    more_sources: Annotated[
        list[str] | None, typer.Argument(help="More source manifests (after --sources).", show_default=False)
    ] = None,
    sources: Annotated[
        list[str] | None,
        typer.Option("--sources", "-s", help="Source manifest, [NAME=]PATH; the first listed copy of an image wins."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Corpus manifest (default <workspace>/corpus/<subset or corpus>.parquet).")
    ] = None,
    root: Annotated[
        list[str] | None, typer.Option(help="Image root of a source or evaluation set, NAME=DIR (repeatable).")
    ] = None,
    eval_manifest: Annotated[
        list[str] | None,
        typer.Option("--eval", help="Evaluation manifest whose test split is kept out, [NAME=]PATH (repeatable)."),
    ] = None,
    patient_link: Annotated[
        list[str] | None,
        typer.Option(
            help="EVAL:SOURCE: that source shares the evaluation set's patient ids (cxrlt24:mimic_cxr and "
            "chexpert:chexpert are known already)."
        ),
    ] = None,
    subset: Annotated[
        str | None, typer.Option(help="cxr207k, cxr744k, cxr1m or a comma-separated list of source names.")
    ] = None,
    near_threshold: Annotated[
        int, typer.Option(help="Near-duplicate pHash Hamming distance (bits of 64).")
    ] = DEFAULT_NEAR_THRESHOLD,
    drop_near_leaks: Annotated[
        bool, typer.Option(help="Also drop images within the threshold of a test image (default: flag only).")
    ] = False,
    workers: Annotated[int, typer.Option(help="Hashing worker processes (or dask workers).")] = 1,
    executor: Annotated[str, typer.Option(help="process or dask.")] = "process",
    scheduler: Annotated[str | None, typer.Option(help="dask.distributed scheduler address.")] = None,
    batch_size: Annotated[int, typer.Option(help="Images hashed per cached batch.")] = 1024,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Union source manifests, drop evaluation test leaks and exact duplicates, flag near-duplicates."""
    from pipeline.corpus.build import CorpusConfig, build_corpus
    from pipeline.corpus.sources import SUBSETS

    configure_logging(verbose)
    ws = workspace_from(workspace)
    roots = _pairs(root or [], "--root", "NAME=DIR")
    specs = [*(sources or []), *(more_sources or [])]
    source_inputs = [_source_input(spec, roots, ws) for spec in specs]
    links = _links(patient_link or [])
    eval_inputs = [_eval_input(spec, roots, links, ws) for spec in eval_manifest or []]
    out = out or ws.root / "corpus" / f"{subset.lower() if subset and subset.lower() in SUBSETS else 'corpus'}.parquet"
    config = CorpusConfig(
        subset=subset,
        near_threshold=near_threshold,
        drop_near_leaks=drop_near_leaks,
        workers=workers,
        executor=executor,
        scheduler=scheduler,
        batch_size=batch_size,
    )
    result = build_corpus(source_inputs, out, eval_inputs, config)
    totals = result.report["totals"]
    console.print(
        f"corpus: {totals['kept']:,} images kept of {totals['manifest_rows']:,}; "
        f"{totals.get('duplicate', 0):,} exact duplicates and "
        f"{sum(totals.get(k, 0) for k in ('leak_image', 'leak_patient', 'leak_near_image')):,} test leaks dropped, "
        f"{totals.get('unreadable', 0):,} unreadable; {totals['near_duplicates_flagged']:,} near-duplicates flagged",
        highlight=False,
    )
    console.print(
        f"wrote {result.manifest_path} (+ .report.md/.json, .removed.parquet, .sources.json)", highlight=False
    )


def _source_input(spec: str, roots: dict[str, Path], ws: Workspace) -> SourceInput:
    from pipeline.corpus.build import SourceInput
    from pipeline.corpus.sources import canonical_name

    name, path = _named_path(spec)
    if name is None:
        name = _name_from_manifest(path)
    name = canonical_name(name)
    return SourceInput(name=name, manifest=path, root=_root_of(name, roots, ws))


def _eval_input(spec: str, roots: dict[str, Path], links: dict[str, list[str]], ws: Workspace) -> EvalInput:
    from pipeline.corpus.build import EvalInput
    from pipeline.corpus.sources import PATIENT_LINKS

    name, path = _named_path(spec)
    name = name or path.name.removesuffix(".parquet")
    patient_sources = (*PATIENT_LINKS.get(name, ()), *links.get(name, ()))
    return EvalInput(name=name, manifest=path, root=_root_of(name, roots, ws), patient_sources=patient_sources)


def _named_path(spec: str) -> tuple[str | None, Path]:
    name, sep, path = spec.partition("=")
    if sep and name and "/" not in name:
        return name.strip(), Path(path)
    return None, Path(spec)


def _name_from_manifest(path: Path) -> str:
    """The manifest's single `source` value when it has one, else the file name."""
    import pandas as pd
    import pyarrow.parquet as pq

    if path.is_file() and "source" in pq.read_schema(path).names:
        values = pd.read_parquet(path, columns=["source"])["source"].dropna().unique()
        if len(values) == 1:
            return str(values[0])
    return path.name.removesuffix(".parquet")


def _root_of(name: str, roots: dict[str, Path], ws: Workspace) -> Path:
    from pipeline.corpus.sources import canonical_name

    for key, value in roots.items():
        if key == name or canonical_name(key) == name:
            return value
    default = ws.images_dir(name)
    if not default.is_dir():
        raise ConfigError(f"no image root for {name!r}: pass --root {name}=DIR (default {default} does not exist)")
    return default


def _links(specs: list[str]) -> dict[str, list[str]]:
    from pipeline.corpus.sources import canonical_name

    links: dict[str, list[str]] = {}
    for spec in specs:
        eval_name, sep, source = spec.partition(":")
        if not sep or not eval_name or not source:
            raise ConfigError(f"--patient-link {spec!r}: expected EVAL:SOURCE, e.g. cxrlt24:mimic_cxr")
        links.setdefault(eval_name, []).append(canonical_name(source))
    return links


def _pairs(specs: list[str], option: str, form: str) -> dict[str, Path]:
    pairs = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name or not value:
            raise ConfigError(f"{option} {spec!r}: expected {form}")
        pairs[name.strip()] = Path(value)
    return pairs


@corpus_app.command("shard")
@chex_command
def shard_command(
    corpus: Annotated[
        Path | None, typer.Option(help="Corpus manifest (default <workspace>/corpus/cxr1m.parquet).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Shard folder (default <workspace>/shards/<name>).")] = None,
    name: Annotated[str | None, typer.Option(help="Shard set name (default: the corpus file name).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the shuffle within each source.")] = 0,
    shard_size: Annotated[str, typer.Option(help="Target shard size, e.g. 1GB, 500MB, 64MiB.")] = "1GB",
    shard_mb: Annotated[float | None, typer.Option("--shard-mb", hidden=True)] = None,
    samples_per_shard: Annotated[int | None, typer.Option(help="At most this many images per shard.")] = None,
    max_side: Annotated[int | None, typer.Option(help="Downscale images whose long side exceeds this.")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes (or dask workers).")] = 1,
    executor: Annotated[str, typer.Option(help="process or dask.")] = "process",
    scheduler: Annotated[str | None, typer.Option(help="dask.distributed scheduler address.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Pack the corpus into tar shards, sources interleaved so every shard holds a mixed stream."""
    from pipeline.cli.shard import parse_size
    from pipeline.corpus.sharding import shard_corpus

    configure_logging(verbose)
    target = shard_mb * 1e6 if shard_mb else parse_size(shard_size)  # --shard-mb: the old spelling
    ws = workspace_from(workspace)
    if out is not None:
        from pipeline.cli.shard import SHARD_MARKERS
        from pipeline.workspace import out_folder

        out = out_folder(ws, out, "shards", "shard set", SHARD_MARKERS)
    corpus = corpus or ws.root / "corpus" / "cxr1m.parquet"
    name = name or corpus.name.removesuffix(".parquet")
    summary = shard_corpus(
        corpus,
        out or ws.shards_dir(name),
        name,
        seed=seed,
        target_shard_bytes=target,
        samples_per_shard=samples_per_shard,
        max_side=max_side,
        workers=workers,
        executor=executor,
        dask_address=scheduler,
    )
    console.print(
        f"{summary.n_samples:,} images in {summary.n_shards} shards ({summary.megabytes:,.1f} MB) at "
        f"{summary.out_dir}; {summary.written} written now, {summary.skipped} reused, "
        f"{summary.n_quarantined} quarantined",
        highlight=False,
    )
