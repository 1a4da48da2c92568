"""`generate_cohort`: write the synthetic data sets into a workspace, exactly like real ones.

Per data set: `images/<dataset>/<image_id>.png`, `manifests/<dataset>.parquet` (via write_manifest),
`manifests/<dataset>.card.yaml` (the packaged card, `synthetic: true`), `manifests/synth/<dataset>.truth.parquet`
(the ground truth: findings painted on each image and the latent features survival depends on) and
`manifests/<dataset>.synth.json` (the generation parameters), and for the data sets whose spec asks,
`masks/<dataset>/<image_id>.png` (ground-truth lungs and heart, pipeline/synth/masks.py). A data set already
generated with the same parameters is skipped; an interrupted one resumes (images already written are kept).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.cards import DatasetCard, load_card, packaged_card
from pipeline.errors import ConfigError
from pipeline.manifest import write_manifest
from pipeline.progress import progress_bar
from pipeline.synth.masks import STRUCTURES, masks_dir, relative_mask_path
from pipeline.synth.plan import CohortPlan, make_plan
from pipeline.synth.render import PatientJob, render_patient
from pipeline.synth.specs import SPECS, image_count, preset, resolve_datasets
from pipeline.workspace import Workspace

log = logging.getLogger(__name__)

# 2: label-independent variation (habitus, positioning, overlays), stronger survival;
# 3: larger nodules, PLCO's survival latents shown 3x as strongly (SynthSpec.latent_gain)
GENERATOR_VERSION = 3
CHUNK_PATIENTS = 32


@dataclass(frozen=True)
class SynthParams:
    """What determines a synthetic data set's bytes; equal params -> identical files."""

    dataset: str
    size: str
    seed: int
    null: bool
    image_size: int
    n_images: int
    variation: bool = False
    version: int = GENERATOR_VERSION
    masks: bool = False  # anatomy masks written (pipeline/synth/masks.py)

    def to_dict(self) -> dict[str, Any]:
        """Recorded parameters; `masks` only when set, so cohorts made before masks existed stay current."""
        out = dict(self.__dict__)
        if not out["masks"]:
            del out["masks"]
        return out


def generate_cohort(
    workspace: Workspace,
    size: str = "small",
    seed: int = 0,
    null: bool = False,
    datasets: Sequence[str] | None = None,
    image_size: int | None = None,
    workers: int = 1,
    progress: bool = True,
    n_images: dict[str, int] | None = None,
    variation: bool = False,
) -> dict[str, Path]:
    """Generate (or reuse) the synthetic data sets; returns data set -> manifest path.

    `n_images` overrides the preset's image count per data set; `image_size` its image side in pixels.
    `variation` adds label-independent acquisition variation (habitus, wider positioning, exposure gradients,
    collimation, markers, buttons); off by default because at CPU scale it costs the frozen features more than
    pretraining gains (docs/architecture.md).
    """
    chosen = preset(size)
    side = image_size or chosen.image_size
    if side < 32:
        raise ConfigError(f"--image-size {side}: synthetic images need at least 32 pixels a side")
    if workers < 1:
        raise ConfigError(f"--workers {workers}: must be at least 1")
    out: dict[str, Path] = {}
    for name in resolve_datasets(list(datasets) if datasets else None):
        spec = SPECS[name]
        count = (n_images or {}).get(name) or image_count(spec, size)
        params = SynthParams(name, size, seed, null, side, count, variation, masks=spec.masks)
        out[name] = _generate_dataset(workspace, params, chosen.force_rare, workers, progress)
    return out


def synthetic_card(name: str) -> DatasetCard:
    """The packaged card, marked synthetic, whose segmentation task keeps the structures the cohort paints
    (pipeline/synth/masks.py; `lungs` is both lungs) and is dropped where the cohort writes no masks."""
    card = packaged_card(name).with_synthetic(True)
    painted = (*STRUCTURES, "lungs") if SPECS[name].masks else ()
    tasks = []
    for task in card.tasks:
        if task.kind == "segmentation":
            kept = tuple(s for s in task.structures if s in painted)
            if not kept:
                continue
            task = replace(task, structures=kept)
        tasks.append(task)
    return replace(card, tasks=tuple(tasks))


def params_path(workspace: Workspace, dataset: str) -> Path:
    return workspace.manifests_dir / f"{dataset}.synth.json"


def truth_path(workspace: Workspace, dataset: str) -> Path:
    """Outside the manifests' own folder level, so `Workspace.datasets()` does not list it."""
    return workspace.manifests_dir / "synth" / f"{dataset}.truth.parquet"


def read_params(workspace: Workspace, dataset: str) -> dict[str, Any] | None:
    path = params_path(workspace, dataset)
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except json.JSONDecodeError:
        return None


def _generate_dataset(ws: Workspace, params: SynthParams, force_rare: bool, workers: int, progress: bool) -> Path:
    name = params.dataset
    manifest_path = ws.manifest_path(name)
    recorded = read_params(ws, name)
    same = recorded is not None and recorded.get("params") == params.to_dict()
    if same and recorded.get("complete") and manifest_path.is_file():
        log.info("%s: already generated with these parameters, skipped", name)
        card = synthetic_card(name)
        if ws.card_path(name).is_file() and load_card(ws.card_path(name)) != card:  # a task added since (no pixels)
            card.save(ws.card_path(name))
        return manifest_path
    if recorded is None and manifest_path.is_file():
        raise ConfigError(
            f"{manifest_path} exists and was not made by `chex synth` (no {params_path(ws, name).name}): "
            "it may be a real data set's manifest; generate the synthetic cohort in another workspace (-w)"
        )
    images_dir = ws.images_dir(name)
    if not same and images_dir.exists():
        shutil.rmtree(images_dir)  # stale images from other parameters
    if not same and masks_dir(ws.root, name).exists():
        shutil.rmtree(masks_dir(ws.root, name))
    images_dir.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)
    _write_json(params_path(ws, name), {"params": params.to_dict(), "complete": False})

    started = time.perf_counter()
    spec = SPECS[name]
    plan = make_plan(spec, params.n_images, params.seed, params.null, force_rare)
    jobs = list(_jobs(plan, params, spec.bit_depth, images_dir, skip_existing=same, root=ws.root))
    with progress_bar(f"synth {name}", total=len(plan.images), enabled=progress) as advance:
        if workers == 1:
            for job in jobs:
                render_patient(job)
                advance(len(job.image_ids))
        else:
            chunks = [jobs[i : i + CHUNK_PATIENTS] for i in range(0, len(jobs), CHUNK_PATIENTS)]
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = {pool.submit(_render_chunk, chunk): chunk for chunk in chunks}
                for future in as_completed(futures):
                    future.result()
                    advance(sum(len(j.image_ids) for j in futures[future]))

    card = synthetic_card(name)
    manifest = manifest_frame(plan)
    truth_path(ws, name).parent.mkdir(parents=True, exist_ok=True)
    truth_frame(plan, masks=params.masks).to_parquet(truth_path(ws, name), index=False)
    card.save(ws.card_path(name))
    write_manifest(manifest, manifest_path, card)
    summary = {"images": len(manifest), "patients": len(plan.patients), "seconds": time.perf_counter() - started}
    _write_json(params_path(ws, name), {"params": params.to_dict(), "complete": True, **summary})
    log.info("%s: %d images of %d patients in %.1f s", name, summary["images"], summary["patients"], summary["seconds"])
    return manifest_path


def manifest_frame(plan: CohortPlan) -> pd.DataFrame:
    """The manifest: image_id, path, patient_id, split, view, then the card's task columns."""
    images = plan.images
    frame = pd.DataFrame(
        {
            "image_id": images["image_id"].to_numpy(),
            "path": (images["image_id"] + ".png").to_numpy(),
            "patient_id": plan.patients["patient_id"].to_numpy()[images["patient_index"].to_numpy()],
            "split": images["split"].to_numpy(),
            "view": images["view"].to_numpy(),
        }
    )
    card = packaged_card(plan.dataset)
    columns = list(card.label_columns)
    for task in card.survival_tasks:
        for endpoint in task.endpoints:
            columns += [endpoint.time_column, endpoint.event_column]
    for column in columns:
        frame[column] = plan.labels[column].to_numpy()
    return frame


def truth_frame(plan: CohortPlan, masks: bool = False) -> pd.DataFrame:
    """Per image: the findings actually painted (0/1 per finding) and the patient's latent features; with
    `masks`, `mask_path`: the anatomy mask's path relative to the workspace root (pipeline/synth/masks.py)."""
    images = plan.images
    patients = plan.patients.iloc[images["patient_index"].to_numpy()].reset_index(drop=True)
    frame = pd.DataFrame({"image_id": images["image_id"], "patient_id": patients["patient_id"]})
    for name in [*plan.findings, *plan.background]:
        frame[f"shown:{name}"] = images["shown"].map(lambda s, n=name: n in s).astype(np.int8)
    for column in plan.patients.columns:
        if column not in ("patient_id", "split", "n_images"):
            frame[column] = patients[column].to_numpy()
    if masks:
        frame["mask_path"] = [relative_mask_path(plan.dataset, i) for i in images["image_id"]]
    return frame


def _jobs(
    plan: CohortPlan, params: SynthParams, bit_depth: int, out_dir: Path, skip_existing: bool, root: Path
) -> Iterator[PatientJob]:
    images = plan.images
    for p, group in images.groupby("patient_index", sort=True):
        patient = plan.patients.iloc[int(p)]
        yield PatientJob(
            dataset=params.dataset,
            seed=params.seed,
            patient_index=int(p),
            image_ids=tuple(group["image_id"]),
            views=tuple(group["view"]),
            shown=tuple(tuple(s) for s in group["shown"]),
            z_heart=float(patient["z_heart"]),
            z_frailty=float(patient["z_frailty"]),
            image_size=params.image_size,
            bit_depth=bit_depth,
            out_dir=str(out_dir),
            skip_existing=skip_existing,
            variation=params.variation,
            latent_gain=SPECS[params.dataset].latent_gain,
            masks_dir=str(masks_dir(root, params.dataset)) if params.masks else "",
        )


def _render_chunk(jobs: list[PatientJob]) -> int:
    return sum(render_patient(job) for job in jobs)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)
