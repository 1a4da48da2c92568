"""Public masks into the workspace: a source manifest's images that have masks, and their mask files.

A segmentation data set (cards `scr`, `montgomery_lungs`, `shenzhen_lungs`, `chexmask`) is made from an image
manifest (`jsrt`, `montgomery`, `shenzhen`, or a ChestX-ray8 / CheXpert / MIMIC / PadChest / VinDr manifest) and
the masks of one source (pipeline/masks/files.py, rle.py): each image with a mask keeps its manifest row (id,
path, patient, split, view), its masks go to `masks/<dataset>/` (pipeline/masks/workspace.py), and the images
without one are counted. Mask files are matched by image id (the file stem, upper case, as the adapters name
JSRT / Montgomery / Shenzhen images); CheXmask rows by their image id column against the manifest's `path`, as the
longest run of trailing path parts both share without extension (ChestX-ray8's "00000001_000.png" meets
"images_001/images/00000001_000.png"; CheXpert's "CheXpert-v1.0/train/patient1/study1/view1_frontal.jpg" meets
"train/patient1/study1/view1_frontal.jpg").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

from pipeline.errors import ManifestError
from pipeline.masks.files import index_montgomery, index_scr, index_shenzhen, read_indexed
from pipeline.masks.rle import chexmask_masks, read_chexmask
from pipeline.masks.workspace import write_image_masks

MASK_SOURCES = ("scr", "montgomery", "shenzhen", "chexmask")
MANIFEST_COLUMNS = ("image_id", "path", "patient_id", "split", "view")
MAX_PARTS = 4


@dataclass
class ImportedMasks:
    """The segmentation manifest (the source manifest's rows with masks) and what was left out."""

    manifest: pd.DataFrame
    without_mask: int = 0
    examples: list[str] = field(default_factory=list)


def import_masks(
    root: Path,
    dataset: str,
    manifest: pd.DataFrame,
    source: str,
    path: str | Path,
    structures: Sequence[str],
    min_dice: float | None = 0.7,
) -> ImportedMasks:
    """Write the masks of `manifest`'s images from `source` at `path` into `masks/<dataset>/`; only the
    `structures` the data set's card names are kept (a source's other structures are left out)."""
    if source not in MASK_SOURCES:
        raise ManifestError(f"mask source {source!r}: choose one of {', '.join(MASK_SOURCES)}")
    wanted = set(structures) | ({"right_lung", "left_lung"} if "lungs" in structures else set())
    ids = manifest["image_id"].astype(str).tolist()
    found: list[int] = []
    if source == "chexmask":
        frame = read_chexmask(path, min_dice=min_dice)
        matches = match_by_path(frame["image_id"].tolist(), manifest["path"].astype(str).tolist())
        for row_index, position in matches.items():
            masks = chexmask_masks(frame.iloc[row_index])
            write_image_masks(root, dataset, ids[position], {k: v for k, v in masks.items() if k in wanted})
            found.append(position)
    else:
        index = {"scr": index_scr, "montgomery": index_montgomery, "shenzhen": index_shenzhen}[source](path)
        for position, image_id in enumerate(ids):
            key = PurePosixPath(image_id).stem.upper()
            if key in index:
                masks = read_indexed(index, key)
                write_image_masks(root, dataset, image_id, {k: v for k, v in masks.items() if k in wanted})
                found.append(position)
    if not found:
        raise ManifestError(f"none of the {len(ids)} images of the manifest has a {source} mask under {path}")
    keep = sorted(set(found))
    missing = [ids[k] for k in range(len(ids)) if k not in set(keep)]
    columns = [c for c in MANIFEST_COLUMNS if c in manifest.columns]
    return ImportedMasks(manifest.iloc[keep][columns].reset_index(drop=True), len(missing), missing[:5])


def match_by_path(mask_ids: Sequence[str], paths: Sequence[str]) -> dict[int, int]:
    """mask row -> manifest position, matching the longest trailing path parts (without extension) that both
    share and that name one manifest image only."""
    tables: list[dict[tuple[str, ...], int | None]] = [{} for _ in range(MAX_PARTS + 1)]
    for position, path in enumerate(paths):
        parts = _parts(path)
        for k in range(1, min(len(parts), MAX_PARTS) + 1):
            key = parts[-k:]
            tables[k][key] = None if key in tables[k] else position  # None: ambiguous at this length
    out: dict[int, int] = {}
    for row, mask_id in enumerate(mask_ids):
        parts = _parts(mask_id)
        for k in range(min(len(parts), MAX_PARTS), 0, -1):
            position = tables[k].get(parts[-k:])
            if position is not None:
                out[row] = position
                break
    return out


def _parts(path: str) -> tuple[str, ...]:
    pure = PurePosixPath(str(path).replace("\\", "/"))
    return (*pure.parent.parts, pure.stem) if pure.parent.parts else (pure.stem,)


def make_mask_dataset(
    workspace,
    name: str,
    from_dataset: str,
    source: str,
    path: str | Path,
    min_dice: float | None = 0.7,
) -> ImportedMasks:
    """`chex manifest masks`: the segmentation data set `name` (packaged card of that name) from the workspace's
    manifest of `from_dataset` and the masks of `source` at `path`: writes masks/<name>/, manifests/<name>.parquet
    and its card (with the image root of `from_dataset`, so shard and embed find the images)."""
    from dataclasses import replace

    from pipeline.cards import packaged_card, read_card
    from pipeline.manifest import read_manifest, write_manifest

    card = packaged_card(name)
    task = card.segmentation_task
    if task is None:
        raise ManifestError(f"card {name!r} has no segmentation task; choose a segmentation card (scr, chexmask, ...)")
    source_path = workspace.manifest_path(from_dataset)
    if not source_path.is_file():
        raise ManifestError(f"no manifest of {from_dataset!r} at {source_path}; make it first (`chex manifest ...`)")
    manifest = read_manifest(source_path, read_card(workspace, from_dataset))
    imported = import_masks(workspace.root, name, manifest, source, path, task.structures, min_dice=min_dice)
    root = str(workspace.image_root(from_dataset))
    notes = (f"images of {from_dataset} with a {source} mask: {len(imported.manifest)} kept, "
             f"{imported.without_mask} without one",)  # fmt: skip
    card = replace(card, image_root=root, notes=card.notes + notes)
    card.save(workspace.card_path(name))
    write_manifest(imported.manifest, workspace.manifest_path(name), card)
    return imported
