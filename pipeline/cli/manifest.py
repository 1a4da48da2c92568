"""`chex manifest`: turn label files into the common manifest + data set card.

chex manifest chexpert --source train.csv --source valid.csv --root /data/chexpert
chex manifest custom peds --labels labels.csv --root /data/peds
chex manifest folder peds --root /data/peds --labels-from-subdirs
chex manifest validate peds

The adapters (pandas and friends) load only when a command runs, so `chex --help` stays fast.
"""

from __future__ import annotations

import ast
from importlib import util
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import (
    OverwriteOption,
    VerboseOption,
    WorkspaceOption,
    app,
    chex_command,
    configure_logging,
    console,
    workspace_from,
)
from pipeline.cli.constants import ADAPTERS
from pipeline.errors import ConfigError
from pipeline.workspace import check_name, out_file

manifest_app = typer.Typer(
    help="Turn label files into the common manifest + card (official data sets, your own CSV or folder).",
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
SurvivalOption = Annotated[
    list[str] | None,
    typer.Option(help="TIME:EVENT[:HORIZON_YEARS] columns of a survival endpoint (repeatable; horizon 5)."),
]
IgnoreOption = Annotated[
    list[str] | None, typer.Option(help="A column that is neither a finding nor used (repeatable).")
]
PatientRegexOption = Annotated[
    str | None, typer.Option(help="Patient id from each file name: the regex's first group (or whole match).")
]
FractionsOption = Annotated[
    str, typer.Option(help="train,val,test fractions of the seeded patient split when there is no split column.")
]


def _register(dataset: str) -> None:
    @manifest_app.command(dataset, help=_summary(dataset))
    @chex_command
    def command(
        files: FilesArgument = None,
        source: SourceOption = None,
        root: RootOption = None,
        out: OutOption = None,
        overwrite: OverwriteOption = False,
        seed: SeedOption = 0,
        verbose: VerboseOption = False,
        workspace: WorkspaceOption = None,
    ) -> None:
        configure_logging(verbose)
        _run(dataset, [*(source or []), *(files or [])], root, _manifest_out(dataset, out, overwrite, workspace), seed,
             workspace)  # fmt: skip


@manifest_app.command("plco", help="PLCO: image list + mortality CSVs -> manifest with survival columns.")
@chex_command
def plco_command(
    files: FilesArgument = None,
    source: SourceOption = None,
    root: RootOption = None,
    out: OutOption = None,
    overwrite: OverwriteOption = False,
    seed: SeedOption = 0,
    cvd_codes: Annotated[
        str | None, typer.Option(help="Comma-separated numeric cause-of-death codes that mean CVD death.")
    ] = None,
    verbose: VerboseOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    configure_logging(verbose)
    codes = [c.strip() for c in cvd_codes.split(",") if c.strip()] if cvd_codes else []
    out = _manifest_out("plco", out, overwrite, workspace)
    _run("plco", [*(source or []), *(files or [])], root, out, seed, workspace, cvd_codes=codes)


@manifest_app.command(
    "masks",
    help="A segmentation data set (card scr, montgomery_lungs, shenzhen_lungs or chexmask) from a manifest's images "
    "and public masks: JSRT SCR gifs, Montgomery ManualMask, Shenzhen *_mask.png or a CheXmask CSV.",
)
@chex_command
def masks_command(
    name: Annotated[str, typer.Argument(help="Segmentation data set: scr, montgomery_lungs, shenzhen_lungs, chexmask")],
    from_dataset: Annotated[str, typer.Option("--from", help="The workspace's image manifest (jsrt, cxr14, ...).")],
    masks: Annotated[Path, typer.Option(help="Mask folder (scr, montgomery, shenzhen) or CheXmask CSV.")],
    kind: Annotated[str, typer.Option("--kind", help="Mask source: scr, montgomery, shenzhen or chexmask.")],
    min_dice: Annotated[
        float, typer.Option(help="CheXmask: keep masks with Dice RCA (Mean) at least this (CheXmask's advice).")
    ] = 0.7,
    verbose: VerboseOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    configure_logging(verbose)
    from pipeline.masks.import_masks import make_mask_dataset

    ws = workspace_from(workspace)
    out = make_mask_dataset(ws, check_name(name, "data set"), from_dataset, kind, masks, min_dice=min_dice)
    console.print(
        f"{name}: {len(out.manifest)} images with masks ({out.without_mask} of {from_dataset} without one"
        + (f", e.g. {out.examples}" if out.examples else "")
        + f") -> {ws.manifest_path(name)}, masks in {ws.root / 'masks' / name}"
    )


@manifest_app.command(
    "custom", help="Your own labels (CSV/Parquet with a `path` column) -> manifest + card with inferred tasks."
)
@chex_command
def custom_command(
    name: Annotated[str, typer.Argument(help="Data set name (manifests/NAME.parquet + NAME.card.yaml).")],
    labels: Annotated[Path, typer.Option(help="Label table: path[, image_id, patient_id, split, view], findings.")],
    root: Annotated[Path, typer.Option(help="Image root the `path` column is relative to.")],
    survival: SurvivalOption = None,
    ignore: IgnoreOption = None,
    patient_regex: PatientRegexOption = None,
    split_fractions: FractionsOption = "0.7,0.1,0.2",
    seed: SeedOption = 0,
    out: OutOption = None,
    overwrite: OverwriteOption = False,
    verbose: VerboseOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    configure_logging(verbose)
    out = _manifest_out(check_name(name, "data set"), out, overwrite, workspace)
    from data_manifests.adapters.custom import read_labels

    _custom(
        name,
        read_labels(labels),
        str(labels),
        root,
        out,
        survival,
        ignore,
        patient_regex,
        split_fractions,
        seed,
        workspace,
    )


@manifest_app.command(
    "folder",
    help="A folder of PNG/JPEG/DICOM images -> a labelled data set (--labels-from-subdirs: root/<class>/...) "
    "or an unlabelled pretraining source (corpus/sources/NAME.parquet).",
)
@chex_command
def folder_command(
    name: Annotated[str | None, typer.Argument(help="Data set or source name.")] = None,
    root: Annotated[Path | None, typer.Option(help="Folder to walk recursively.")] = None,
    labels_from_subdirs: Annotated[
        bool, typer.Option(help="ImageFolder: each first-level folder is a class (normal/ + one class: binary).")
    ] = False,
    patient_regex: PatientRegexOption = None,
    split_fractions: FractionsOption = "0.7,0.1,0.2",
    seed: SeedOption = 0,
    out: Annotated[
        Path | None,
        typer.Option(help="Manifest path (default manifests/NAME.parquet, or corpus/sources/NAME.parquet unlabelled)."),
    ] = None,
    overwrite: OverwriteOption = False,
    source: Annotated[str | None, typer.Option("--source", "-s", hidden=True)] = None,
    verbose: VerboseOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    from pipeline.cli.app import pick

    configure_logging(verbose)
    name = pick(name, source, "NAME", "--source")
    if name is None or root is None:
        raise ConfigError("chex manifest folder NAME --root DIR [--labels-from-subdirs]: give a name and a root")
    check_name(name, "data set")
    ws = workspace_from(workspace)
    own = ws.manifest_path(name) if labels_from_subdirs else _source_path(ws, name)
    if out is not None:
        out = out_file(ws, out, overwrite=overwrite, own=own)
    if labels_from_subdirs:
        from data_manifests.adapters.custom import labels_from_subdirs as subdir_labels

        table = subdir_labels(root)
        _custom(
            name,
            table,
            f"class folders of {root}",
            root,
            out,
            None,
            None,
            patient_regex,
            split_fractions,
            seed,
            workspace,
        )
        return
    from data_manifests.adapters import make_folder_manifest

    out = out or own
    result = make_folder_manifest(root, name, out)
    frame = result.frame
    views = frame["view"].fillna("unknown").value_counts().to_dict()
    console.print(
        f"{name}: {len(frame):,} unlabelled images of {frame['patient_id'].nunique():,} patients; views {views}",
        highlight=False,
    )
    console.print(
        f"wrote {result.manifest_path}, a pretraining source (use: chex corpus build --sources {name}={out} "
        f"--root {name}={root}); for a labelled data set add --labels-from-subdirs or use `chex manifest custom`",
        highlight=False,
    )


@manifest_app.command("validate", help="Check a manifest against its card and images; list every problem at once.")
@chex_command
def validate_command(
    name: Annotated[str, typer.Argument(help="Data set name in the workspace.")],
    manifest: Annotated[Path | None, typer.Option(help="Manifest (default manifests/NAME.parquet).")] = None,
    root: Annotated[Path | None, typer.Option(help="Image root (default: the root recorded in the card).")] = None,
    workspace: WorkspaceOption = None,
) -> None:
    import pandas as pd

    from pipeline.cards import card_beside
    from pipeline.errors import ManifestError
    from pipeline.manifest_check import check_manifest

    ws = workspace_from(workspace)
    path = manifest or ws.manifest_path(name)
    if not path.is_file():
        raise ManifestError(
            f"no manifest at {path}: make one with `chex manifest custom {name} --labels ... --root ...`"
        )
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise ManifestError(f"{path}: not a readable Parquet manifest ({exc})") from exc
    card = card_beside(path)
    root = root or (Path(card.image_root) if card is not None and card.image_root else ws.image_root(name))
    check_manifest(frame, card, root, str(path))
    splits = frame["split"].value_counts().to_dict()
    card_text = f"card {len(card.label_columns)} output(s)" if card else "no card (labels not checked)"
    console.print(
        f"{path}: OK: {len(frame):,} images, {frame['patient_id'].nunique():,} patients, splits {splits}, "
        f"{card_text}, every file found under {root}",
        highlight=False,
    )


def _custom(name, table, source, root, out, survival, ignore, patient_regex, split_fractions, seed, workspace) -> None:
    from data_manifests.adapters.custom import CustomOptions, SurvivalSpec, make_custom

    check_name(name, "data set")
    ws = workspace_from(workspace)
    options = CustomOptions(
        survival=[SurvivalSpec.parse(s) for s in survival or []],
        ignore=list(ignore or []),
        patient_regex=patient_regex,
        fractions=_fractions(split_fractions),
        seed=seed,
    )
    result = make_custom(name, table, root, out or ws.manifest_path(name), options, source=source)
    frame, card = result.frame, result.card
    splits = frame["split"].value_counts()
    counts = ", ".join(f"{s} {int(splits.get(s, 0)):,}" for s in ("train", "val", "test"))
    console.print(
        f"{name}: {len(frame):,} images of {frame['patient_id'].nunique():,} patients ({counts})", highlight=False
    )
    for task in card.tasks:
        if task.kind == "survival":
            e = task.endpoints[0]
            console.print(
                f"  task {task.name}: survival, time {e.time_column}, event {e.event_column}, "
                f"horizon {task.horizon_years:g} y -> output {task.columns[0]}",
                highlight=False,
            )
        else:
            for column in task.columns:
                values = frame[column]
                console.print(
                    f"  task {task.name} ({task.kind}): {column}: {int((values == 1).sum())} positive, "
                    f"{int((values == 0).sum())} negative, {int((values == -1).sum())} uncertain, "
                    f"{int(values.isna().sum())} blank",
                    highlight=False,
                )
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    console.print(f"wrote {result.manifest_path} and {result.card_path}", highlight=False)
    console.print(f"next: chex shard {name}   (or straight to: chex embed {name} --checkpoint ...)", highlight=False)


def _manifest_out(dataset: str, out: Path | None, overwrite: bool, workspace) -> Path | None:
    """An --out manifest path checked like every --out (pipeline.workspace.out_file); its own place,
    manifests/DATASET.parquet, is allowed; None stays None (the default, rewritten by a rerun)."""
    if out is None:
        return None
    ws = workspace_from(workspace)
    return out_file(ws, out, overwrite=overwrite, own=ws.manifest_path(dataset))


def _source_path(ws, name: str) -> Path:
    return ws.root / "corpus" / "sources" / f"{name}.parquet"


def _fractions(text: str) -> dict[str, float]:
    try:
        values = [float(t) for t in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or any(v < 0 for v in values) or sum(values) <= 0 or values[2] <= 0:
        raise ConfigError(f"--split-fractions {text!r}: expected three fractions train,val,test, e.g. 0.7,0.1,0.2")
    return dict(zip(("train", "val", "test"), values, strict=True))


def _run(
    dataset: str, sources: list[str], root: Path | None, out: Path | None, seed: int, workspace, **options
) -> None:
    from data_manifests.adapters import make_manifest

    if not sources:
        raise ConfigError(f"chex manifest {dataset}: pass the official files with --source FILE (repeatable)")
    ws = workspace_from(workspace)
    result = make_manifest(dataset, sources, out or ws.manifest_path(dataset), root=root, seed=seed, **options)
    _report(dataset, result, root)


def _report(dataset: str, result, root: Path | None) -> None:
    frame = result.frame
    splits = frame["split"].value_counts()
    counts = ", ".join(f"{s} {int(splits.get(s, 0)):,}" for s in ("train", "val", "test") if s in splits)
    console.print(
        f"{dataset}: {len(frame):,} images of {frame['patient_id'].nunique():,} patients ({counts})", highlight=False
    )
    for note in getattr(result, "notes", []):
        console.print(f"[bold yellow]note:[/] {note}", highlight=False)
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
    """The first paragraph of the adapter module's docstring, read without importing it (pandas is slow)."""
    spec = util.find_spec("data_manifests")  # not data_manifests.adapters: that would import the adapters
    doc = ""
    if spec is not None and spec.origin:
        module = Path(spec.origin).parent / "adapters" / f"{dataset}.py"
        doc = ast.get_docstring(ast.parse(module.read_text())) or ""
    return (doc or dataset).strip().split("\n\n")[0].replace("\n", " ")


for _dataset in ADAPTERS:
    if _dataset != "plco":
        _register(_dataset)
