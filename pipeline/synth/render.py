"""Render one patient's images from the plan: anatomy from the patient's latent features, findings painted,
exposure and noise, PNG written atomically. Each patient has its own seeded generators, so the result does
not depend on worker count or order."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.shard_format import encode_png
from pipeline.synth.anatomy import Anatomy, Chest, Habitus, expose, new_chest
from pipeline.synth.findings import apply_modifiers, paint
from pipeline.synth.masks import chest_masks, write_mask
from pipeline.synth.plan import dataset_code
from pipeline.synth.specs import CXRLT24_PREVALENCE
from pipeline.synth.tubes import TUBE_PAINTERS

# How strongly the survival latents show, per SD: heart silhouette scale (log), bone brightness, lung texture (log).
# A data set's spec multiplies them by its `latent_gain` (PLCO's is larger: they carry its mortality signal).
HEART_EFFECT = 0.12
BONE_EFFECT = 0.15
TEXTURE_EFFECT = 0.4
HEART_RANGE = (0.45, 2.2)  # the silhouette stays inside the thorax (about +-2 SD at PLCO's gain)
TEXTURE_MAX = 0.25

# Stable per-finding stream ids (position in this sorted list), independent of which data set uses them.
_FINDING_IDS = {name: i for i, name in enumerate(sorted({*CXRLT24_PREVALENCE, "Tuberculosis", "Nodule"}))}
# Later findings get ids after them, so the earlier findings' streams (and images) do not move.
_FINDING_IDS.update({name: 1000 + i for i, name in enumerate(sorted(TUBE_PAINTERS))})


@dataclass(frozen=True)
class PatientJob:
    """Everything a worker needs to render one patient's images."""

    dataset: str
    seed: int
    patient_index: int
    image_ids: tuple[str, ...]
    views: tuple[str, ...]
    shown: tuple[tuple[str, ...], ...]  # findings painted on each image
    z_heart: float
    z_frailty: float
    image_size: int
    bit_depth: int
    out_dir: str
    skip_existing: bool = False
    variation: bool = False  # label-independent acquisition variation (docs/architecture.md, the cohort)
    latent_gain: float = 1.0  # multiplies HEART/BONE/TEXTURE_EFFECT (SynthSpec.latent_gain)
    masks_dir: str = ""  # where to write the anatomy masks (pipeline/synth/masks.py); "" = none


def render_patient(job: PatientJob) -> int:
    """Render and write a patient's images; returns how many were written (existing files skipped when asked)."""
    out_dir = Path(job.out_dir)
    todo = [
        k
        for k, image_id in enumerate(job.image_ids)
        if not (job.skip_existing and (out_dir / f"{image_id}.png").is_file())
    ]
    masks: list[np.ndarray] | None = [] if job.masks_dir else None
    for k, pixels in zip(todo, render_pixels(job, todo, masks), strict=True):
        if masks:  # the mask first: an image on disk implies its mask (resume skips by image)
            write_mask(Path(job.masks_dir) / f"{job.image_ids[k]}.png", masks.pop(0))
        _write_atomic(out_dir / f"{job.image_ids[k]}.png", encode_png(pixels))
    return len(todo)


def render_pixels(
    job: PatientJob, which: list[int] | None = None, masks: list[np.ndarray] | None = None
) -> list[np.ndarray]:
    """The pixels of a patient's images (all, or the positions in `which`), uint8 or uint16; with `masks` (a
    list) also each image's anatomy mask appended to it (no random draw: the pixels do not change)."""
    return [expose(chest, rng, job.bit_depth, job.variation) for chest, rng in painted_chests(job, which, masks)]


def painted_chests(
    job: PatientJob, which: list[int] | None = None, masks: list[np.ndarray] | None = None
) -> Iterator[tuple[Chest, np.random.Generator]]:
    """Each image's chest with its findings painted, before exposure, and the image's generator (exposure draws
    from it next): what `render_pixels` exposes, and where the planted lines' tips are read
    (pipeline/synth/tips.py)."""
    base = [job.seed, dataset_code(job.dataset), job.patient_index + 1]
    patient_rng = np.random.default_rng([*base, 3])
    gain = job.latent_gain
    heart0 = float(np.clip(np.exp(gain * HEART_EFFECT * job.z_heart), *HEART_RANGE))
    bone0 = float(np.clip(1.0 - gain * BONE_EFFECT * job.z_frailty, 0.4, 1.6))
    texture0 = float(min(0.03 * np.exp(gain * TEXTURE_EFFECT * job.z_frailty), TEXTURE_MAX))
    lungs0 = float(patient_rng.uniform(0.95, 1.05))
    habitus = Habitus.draw(patient_rng) if job.variation else Habitus()
    for k in range(len(job.image_ids)) if which is None else which:
        rng = np.random.default_rng([*base, 2, k])
        anatomy = Anatomy(
            heart=heart0 * float(np.exp(rng.normal(0.0, 0.02))),
            lungs=lungs0,
            bone=bone0,
            texture=texture0,
            view=job.views[k],
        )
        shown = list(job.shown[k])
        chest = new_chest(job.image_size, apply_modifiers(anatomy, shown), rng, habitus, job.variation)
        # One generator per finding seeded by patient and finding only: it sits in the same place on every
        # image of the patient (per-image jitter comes from the image's generator).
        finding_rngs = {name: np.random.default_rng([*base, 1, _FINDING_IDS.get(name, 999)]) for name in shown}
        if masks is not None:
            masks.append(chest_masks(chest))
        paint(chest, shown, finding_rngs)
        yield chest, rng


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
