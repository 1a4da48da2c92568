"""Adapters: each data set's official label files -> the common manifest (docs/architecture.md, "Contracts": manifest).

One module per data set, each with `build(sources, seed=0) -> DataFrame`; `make_manifest` validates the result
against the packaged card and writes the manifest and its card. `folder.build_folder` turns a folder of images
into a pretraining-source manifest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from data_manifests.adapters import chexpert, cxr14, cxrlt24, jsrt, montgomery, plco, ranzcr, shenzhen
from data_manifests.adapters.common import Source, missing_images, relocate_paths
from data_manifests.adapters.folder import build_folder
from pipeline.cards import packaged_card
from pipeline.errors import ConfigError, ManifestError
from pipeline.manifest import validate_manifest, write_manifest

log = logging.getLogger(__name__)

ADAPTERS: dict[str, Callable[..., pd.DataFrame]] = {
    "chexpert": chexpert.build,
    "cxr14": cxr14.build,
    "cxrlt24": cxrlt24.build,
    "shenzhen": shenzhen.build,
    "montgomery": montgomery.build,
    "jsrt": jsrt.build,
    "plco": plco.build,
    "ranzcr": ranzcr.build,
}
# Files an adapter writes beside the manifest (data set -> writer(frame, manifest path) -> path or None).
SIDECARS: dict[str, Callable[[pd.DataFrame, Path], Path | None]] = {"ranzcr": ranzcr.write_sidecar}


@dataclass
class ManifestResult:
    """What `make_manifest` wrote and what it noticed."""

    manifest_path: Path
    card_path: Path | None
    frame: pd.DataFrame
    relocated: int = 0
    missing_count: int = 0
    missing_examples: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # choices made (split, views): logged, printed, in the card


def build_manifest(dataset: str, sources: Sequence[str | Path | Source], seed: int = 0, **options) -> pd.DataFrame:
    """The validated manifest of a data set from its official files (nothing written)."""
    if dataset not in ADAPTERS:
        raise ConfigError(f"no adapter for data set {dataset!r}; adapters: {', '.join(ADAPTERS)}")
    frame = ADAPTERS[dataset]([str(s) if isinstance(s, Path) else s for s in sources], seed=seed, **options)
    validate_manifest(frame, packaged_card(dataset), source=f"{dataset} manifest from {len(sources)} source(s)")
    return frame


def make_manifest(
    dataset: str,
    sources: Sequence[str | Path | Source],
    out: str | Path,
    root: str | Path | None = None,
    seed: int = 0,
    **options,
) -> ManifestResult:
    """Build, validate and write `out` (+ `<name>.card.yaml` beside it). With `root`, bare file names are
    located under it and images still missing are counted (reported, not fatal)."""
    frame = build_manifest(dataset, sources, seed=seed, **options)
    card = packaged_card(dataset)
    notes = list(frame.attrs.get("notes", []))
    frame, view_note = _apply_view_filter(frame, card)
    notes += [view_note] if view_note else []
    for note in notes:
        log.warning("%s: %s", dataset, note)
    relocated, missing, examples = 0, 0, []
    if root is not None:
        root = _root(root)
        relocated = relocate_paths(frame, root)
        missing, examples = missing_images(frame, root)
    out = Path(out)
    card = replace(card, notes=tuple(notes), image_root=str(root.resolve()) if root is not None else "")
    write_manifest(frame, out, card)
    if dataset in SIDECARS and (sidecar := SIDECARS[dataset](frame, out)) is not None:
        log.info("%s: wrote %s", dataset, sidecar)
    card_path = out.with_name(out.name.removesuffix(".parquet") + ".card.yaml")
    card.save(card_path)
    return ManifestResult(out, card_path, frame, relocated, missing, examples, notes)


def _apply_view_filter(frame: pd.DataFrame, card) -> tuple[pd.DataFrame, str | None]:
    """Keep the views the card evaluates on (CheXpert: frontal); images of unknown view are kept."""
    if not card.views or "view" not in frame.columns:
        return frame, None
    known = frame["view"].notna()
    drop = known & ~frame["view"].isin(card.views)
    if not drop.any():
        return frame, None
    dropped = frame.loc[drop, "view"].value_counts().to_dict()
    kept = frame[~drop].reset_index(drop=True)
    kept.attrs = dict(frame.attrs)
    counts = kept["split"].value_counts().to_dict()
    return kept, (
        f"view filter of the card ({', '.join(card.views)}): left out {int(drop.sum()):,} images {dropped}; "
        f"kept {len(kept):,} {counts} (paper: {card.paper_splits})"
    )


def make_folder_manifest(root: str | Path, source: str, out: str | Path) -> ManifestResult:
    """Walk a folder of images into a pretraining-source manifest (split 'train', `source` column)."""
    from pipeline.workspace import check_name

    check_name(source, "source")  # it names the manifest file
    frame = build_folder(_root(root), source)
    out = write_manifest(frame, out)
    return ManifestResult(Path(out), None, frame)


def _root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"--root {root}: not a folder")
    return root


__all__ = ["ADAPTERS", "ManifestResult", "Source", "build_manifest", "make_folder_manifest", "make_manifest"]
