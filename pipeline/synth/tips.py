"""Where the synthetic cohort planted each line's tip, in image pixels: read by re-painting the images.

The generator is deterministic (a patient's images depend only on the generation parameters recorded in
`manifests/<dataset>.synth.json`), so the tip of every line drawn (pipeline/synth/tubes.py `draw_line`, the
polyline's last point) is recovered exactly by painting the image again without exposing it; nothing extra is
stored, and workspaces generated before this module have their tips too. The report marks them on the GLoRI
attention maps of abnormal tubes (pipeline/report/tubes.py).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from pipeline.synth.anatomy import Chest
from pipeline.synth.tubes import TUBE_PAINTERS
from pipeline.workspace import Workspace

TIP_COLUMNS = ("image_id", "finding", "x", "y", "on_image", "image_size")


def planted_tips(workspace: Workspace, dataset: str, image_ids: Iterable[str]) -> pd.DataFrame:
    """One row per line finding painted on each of `image_ids`: its tip (x = column, y = row, in pixels of the
    generated image, sub-pixel), whether that lies on the image (an incompletely imaged tube's does not), and
    the image's side. Empty when `dataset` is no synthetic data set of this workspace or the ids are not in it."""
    from pipeline.synth.cohort import _jobs, read_params
    from pipeline.synth.plan import make_plan
    from pipeline.synth.render import painted_chests
    from pipeline.synth.specs import SPECS, preset

    recorded = read_params(workspace, dataset)
    if recorded is None or dataset not in SPECS:
        return pd.DataFrame(columns=list(TIP_COLUMNS))
    params = _params(recorded["params"])
    plan = make_plan(SPECS[dataset], params.n_images, params.seed, params.null, preset(params.size).force_rare)
    wanted = set(map(str, image_ids))
    rows = []
    jobs = _jobs(plan, params, 8, workspace.images_dir(dataset), skip_existing=False, root=workspace.root)
    for job in jobs:
        which = [k for k, image_id in enumerate(job.image_ids) if image_id in wanted]
        if not which:
            continue
        for k, (chest, _) in zip(which, painted_chests(job, which), strict=True):
            for finding, (x, y) in line_tips(chest).items():
                on_image = bool(0 <= x <= params.image_size - 1 and 0 <= y <= params.image_size - 1)
                rows.append((job.image_ids[k], finding, x, y, on_image, params.image_size))
    return pd.DataFrame(rows, columns=list(TIP_COLUMNS))


def line_tips(chest: Chest) -> dict[str, tuple[float, float]]:
    """{finding: (column, row)} of the tip of each line finding painted on `chest` (its last line's last point),
    through the chest's pose: the affine map from anatomical coordinates to pixels, fitted on the pixel grid."""
    tips = {name: points[-1] for name, points in chest.lines if name in TUBE_PAINTERS}
    if not tips:
        return {}
    to_pixels = _pixel_map(chest)
    return {name: tuple(float(v) for v in np.array([*point, 1.0]) @ to_pixels) for name, point in tips.items()}


def _pixel_map(chest: Chest) -> np.ndarray:
    """(3, 2) matrix M with [x, y, 1] @ M = [column, row]: the pose is affine (new_chest), so exact."""
    rows, cols = np.mgrid[0 : chest.x.shape[0], 0 : chest.x.shape[1]]
    design = np.column_stack([chest.x.ravel(), chest.y.ravel(), np.ones(chest.x.size)]).astype(np.float64)
    target = np.column_stack([cols.ravel(), rows.ravel()]).astype(np.float64)
    solution, *_ = np.linalg.lstsq(design, target, rcond=None)
    return solution


def _params(recorded: dict):
    from pipeline.synth.cohort import SynthParams

    return SynthParams(**recorded)
