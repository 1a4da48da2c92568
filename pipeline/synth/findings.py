"""Findings planted as local image changes, one painter per finding column of every packaged card.

Two kinds: anatomy modifiers (Cardiomegaly enlarges the heart, Emphysema hyperinflates the lungs) change the
`Anatomy` before rendering; overlays paint on the rendered chest. A painter gets the patient-level generator
for that finding (so a finding sits in the same place on every image of a patient) and jitters through the
image's own generator (`chest.rng`). Rare findings have weaker or shared signatures, but every one has some.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from pipeline.synth.anatomy import AORTIC_KNOB, HEART, LEFT_LUNG, RIGHT_LUNG, Anatomy, Chest, ellipse, gaussian, segment
from pipeline.synth.tubes import TUBE_PAINTERS

Painter = Callable[[Chest, np.random.Generator], None]

MODIFIERS: dict[str, Callable[[Anatomy], Anatomy]] = {
    "Cardiomegaly": lambda a: replace(a, heart=a.heart * 1.3),
    "Enlarged Cardiomediastinum": lambda a: replace(a, mediastinum=a.mediastinum * 1.7, heart=a.heart * 1.08),
    "Emphysema": lambda a: replace(a, lungs=a.lungs * 1.08, lucency=a.lucency + 0.07),
    "Kyphosis": lambda a: replace(a, spine_curve=a.spine_curve + 0.09, lungs=a.lungs * 0.95),
    "Tortuous Aorta": lambda a: replace(a, aorta=a.aorta * 1.7),
    "Fibrosis": lambda a: replace(a, lungs=a.lungs * 0.96),
}


def apply_modifiers(anatomy: Anatomy, findings: list[str]) -> Anatomy:
    for name in findings:
        if name in MODIFIERS:
            anatomy = MODIFIERS[name](anatomy)
    return anatomy


def paint(chest: Chest, findings: list[str], rngs: dict[str, np.random.Generator]) -> None:
    """Paint every overlay finding in `findings` (modifier-only findings have no overlay); the lines a finding
    draws are recorded under its name in `chest.lines`."""
    for name in findings:
        painter = PAINTERS.get(name)
        if painter is not None:
            start = len(chest.lines)
            painter(chest, rngs[name])
            chest.lines[start:] = [(name, points) for _, points in chest.lines[start:]]


# --- helpers ---------------------------------------------------------------------------------------------


def _lung_geometry(side: int) -> tuple[float, float, float, float]:
    return RIGHT_LUNG if side < 0 else LEFT_LUNG


def _side(rng: np.random.Generator) -> int:
    return -1 if rng.random() < 0.5 else 1


def _lung_point(rng: np.random.Generator, side: int, zone: str = "any") -> tuple[float, float]:
    """A point inside one lung field; zone 'upper', 'lower', 'mid', 'peripheral' or 'any'."""
    cx, cy, rx, ry = _lung_geometry(side)
    lo, hi = {"upper": (-0.85, -0.3), "lower": (0.25, 0.75), "mid": (-0.3, 0.3), "any": (-0.75, 0.7)}.get(
        zone, (-0.7, 0.6)
    )
    ty = rng.uniform(lo, hi)
    half = np.sqrt(max(1.0 - ty**2, 0.05)) * 0.75
    tx = rng.uniform(0.35, 0.8) * side * half / 0.75 if zone == "peripheral" else rng.uniform(-half, half)
    return float(cx + tx * rx), float(cy + ty * ry)


def _jitter(chest: Chest, point: tuple[float, float], sd: float = 0.02) -> tuple[float, float]:
    dx, dy = chest.rng.normal(0.0, sd, size=2).tolist()
    return point[0] + dx, point[1] + dy


# Findings are drawn 20% stronger than at generator version 1, against the label-independent variation
# (positioning, exposure, overlays) the images now carry.
GAIN = 1.2


def _strength(chest: Chest) -> float:
    """Per-image strength variation of a finding."""
    return GAIN * float(chest.rng.uniform(0.8, 1.2))


def _patch(chest: Chest, rng: np.random.Generator, side: int, zone: str, radius: float, amp: float, n: int) -> None:
    """Patchy opacity: a cluster of overlapping blobs, confined to the lung."""
    centre = _jitter(chest, _lung_point(rng, side, zone))
    offsets = rng.normal(0.0, radius * 0.6, size=(n, 2)).tolist()
    sizes = (rng.uniform(0.45, 0.8, size=n) * radius).tolist()
    values = sum(
        gaussian(chest.x, chest.y, centre[0] + ox, centre[1] + oy, s)
        for (ox, oy), s in zip(offsets, sizes, strict=True)
    )
    chest.add(amp * _strength(chest) * np.clip(values, 0, 1.3) * chest.lung(side))


def _disk(chest: Chest, centre: tuple[float, float], radius: float, amp: float, edge: float = 0.15) -> None:
    chest.add(amp * _strength(chest) * ellipse(chest.x, chest.y, *centre, radius, radius, edge=edge))


def _rim(chest: Chest, side: int, depth: float) -> tuple[np.ndarray, np.ndarray]:
    """The outer band of one lung (`depth` of its radius) and the line at its inner edge."""
    cx, cy, rx, ry = _lung_geometry(side)
    shrink = 1.0 - depth
    inner = ellipse(chest.x, chest.y, cx - side * 0.02, cy + depth * 0.25 * ry, rx * shrink, ry * shrink, edge=0.03)
    d = np.sqrt(
        ((chest.x - cx + side * 0.02) / (rx * shrink)) ** 2 + ((chest.y - cy - depth * 0.25 * ry) / (ry * shrink)) ** 2
    )
    lung = chest.lung(side)
    return lung * (1.0 - inner), lung * np.exp(-0.5 * ((d - 1.0) / 0.03) ** 2)


def _base(chest: Chest, side: int, height: float) -> np.ndarray:
    """Lower part of one lung below a level `height` (fraction of the lung) with a lateral meniscus."""
    cx, cy, _, ry = _lung_geometry(side)
    level = cy + ry * (1.0 - 2.0 * height) - 0.25 * np.abs(chest.x - cx) * side * np.sign(chest.x - cx)
    return chest.lung(side) * (1.0 / (1.0 + np.exp(np.clip((level - chest.y) / 0.025, -30, 30))))


# --- painters --------------------------------------------------------------------------------------------


def _support_devices(chest: Chest, rng: np.random.Generator) -> None:
    tip = (rng.normal(0.02, 0.02), rng.uniform(-0.35, -0.1))
    chest.add(0.2 * segment(chest.x, chest.y, (0.0, -1.1), tip, 0.012))
    if rng.random() < 0.6:  # pacemaker / port: a very bright box with a lead to the heart
        box = (rng.uniform(0.45, 0.65), rng.uniform(-0.8, -0.65))
        chest.add(0.3 * ellipse(chest.x, chest.y, *box, 0.07, 0.045, edge=0.05))
        chest.add(0.25 * segment(chest.x, chest.y, box, (HEART[0], HEART[1]), 0.01))
    else:  # central line from the other side
        chest.add(0.28 * segment(chest.x, chest.y, (-0.55, -0.85), (-0.05, -0.2), 0.012))


def _lung_opacity(chest: Chest, rng: np.random.Generator) -> None:
    _patch(chest, rng, _side(rng), "any", 0.17, 0.16, 5)


def _pleural_effusion(chest: Chest, rng: np.random.Generator) -> None:
    sides = (-1, 1) if rng.random() < 0.35 else (_side(rng),)
    for side in sides:
        chest.add(0.24 * _strength(chest) * _base(chest, side, rng.uniform(0.22, 0.4)))


def _atelectasis(chest: Chest, rng: np.random.Generator) -> None:
    side = _side(rng)
    cx, cy, rx, ry = _lung_geometry(side)
    for _ in range(1 + int(rng.random() < 0.5)):
        yl = cy + ry * rng.uniform(0.3, 0.6)
        tilt = rng.normal(0, 0.08)
        p0, p1 = (cx - 0.7 * rx, yl - tilt), (cx + 0.7 * rx, yl + tilt)
        chest.add(0.32 * _strength(chest) * segment(chest.x, chest.y, p0, p1, 0.04) * chest.lung(side))
    chest.add(0.1 * _base(chest, side, 0.25))


def _edema(chest: Chest, rng: np.random.Generator) -> None:
    haze = sum(gaussian(chest.x, chest.y, s * 0.25, 0.0, 0.24, 0.3) for s in (-1, 1))
    chest.add(0.11 * _strength(chest) * haze * chest.lungs)
    x = chest.x
    kerley = np.clip(np.cos(chest.y * 60.0) - 0.6, 0, None) * ((np.abs(x) > 0.55) & (chest.y > 0.15))
    chest.add(0.05 * kerley * chest.lungs)


def _pneumonia(chest: Chest, rng: np.random.Generator) -> None:
    _patch(chest, rng, _side(rng), "lower", 0.16, 0.3, 8)


def _consolidation(chest: Chest, rng: np.random.Generator) -> None:
    side = _side(rng)
    centre = _jitter(chest, _lung_point(rng, side, "any"))
    chest.add(0.27 * _strength(chest) * ellipse(chest.x, chest.y, *centre, 0.13, 0.16, edge=0.2) * chest.lung(side))


def _pneumothorax(chest: Chest, rng: np.random.Generator) -> None:
    side = _side(rng)
    rim, line = _rim(chest, side, rng.uniform(0.2, 0.3))
    chest.add(-0.13 * _strength(chest) * rim + 0.12 * line)


def _fracture(chest: Chest, rng: np.random.Generator, count: int = 1) -> None:
    side = _side(rng)
    for _ in range(count):
        centre = _jitter(chest, _lung_point(rng, side, "peripheral"), 0.01)
        _disk(chest, centre, 0.035, 0.2)
        chest.add(
            -0.12
            * segment(
                chest.x, chest.y, (centre[0] - 0.01, centre[1] - 0.05), (centre[0] + 0.01, centre[1] + 0.05), 0.01
            )
        )


def _rib_fracture(chest: Chest, rng: np.random.Generator) -> None:
    _fracture(chest, rng, count=3)


def _infiltration(chest: Chest, rng: np.random.Generator) -> None:
    points = (rng.uniform(-1, 1, size=(24, 2)) * [0.65, 0.55]).tolist()
    dots = sum(gaussian(chest.x, chest.y, px, py + 0.05, 0.03) for px, py in points)
    chest.add(0.12 * _strength(chest) * np.clip(dots, 0, 1) * chest.lungs)


def _emphysema(chest: Chest, rng: np.random.Generator) -> None:
    for _ in range(3):  # bullae
        side = _side(rng)
        _disk(chest, _lung_point(rng, side, "upper"), 0.06, -0.08)


def _nodule(chest: Chest, rng: np.random.Generator) -> None:
    # Radius 0.055-0.08 of the half-width (7-10 px across at 128 px): at generator version 2's 0.045-0.065 and
    # amplitude 0.34 no frozen CPU-scale feature saw them (JSRT test AUROC 0.50); now 0.75-0.78.
    for _ in range(1 + int(rng.random() < 0.3)):
        side = _side(rng)
        _disk(chest, _jitter(chest, _lung_point(rng, side, "any"), 0.01), rng.uniform(0.055, 0.08), 0.4)


def _mass(chest: Chest, rng: np.random.Generator) -> None:
    _disk(chest, _jitter(chest, _lung_point(rng, _side(rng), "any"), 0.01), 0.11, 0.3, edge=0.12)


def _lung_lesion(chest: Chest, rng: np.random.Generator) -> None:
    _patch(chest, rng, _side(rng), "any", 0.08, 0.24, 3)


def _granuloma(chest: Chest, rng: np.random.Generator) -> None:
    _disk(chest, _lung_point(rng, _side(rng), "any"), 0.022, 0.5, edge=0.1)


def _tortuous_aorta(chest: Chest, rng: np.random.Generator) -> None:
    cx, cy, _, _ = AORTIC_KNOB
    chest.add(0.1 * gaussian(chest.x, chest.y, cx + 0.12, cy + 0.1, 0.06, 0.12))


def _aortic_calcification(chest: Chest, rng: np.random.Generator) -> None:
    cx, cy, rx, ry = AORTIC_KNOB
    d = np.sqrt(((chest.x - cx) / rx) ** 2 + ((chest.y - cy) / ry) ** 2)
    arc = np.exp(-0.5 * ((d - 1.0) / 0.15) ** 2) * (chest.y < cy + 0.02)
    chest.add(0.35 * _strength(chest) * arc)


def _hernia(chest: Chest, rng: np.random.Generator) -> None:
    centre = (HEART[0] - 0.05, HEART[1] + 0.12)
    _disk(chest, centre, 0.1, 0.14)
    _disk(chest, (centre[0], centre[1] - 0.03), 0.045, -0.25)


def _pleural_thickening(chest: Chest, rng: np.random.Generator) -> None:
    rim, _ = _rim(chest, _side(rng), 0.1)
    chest.add(0.17 * _strength(chest) * rim)


def _fibrosis(chest: Chest, rng: np.random.Generator) -> None:
    lower = 1.0 / (1.0 + np.exp(np.clip((0.0 - chest.y) / 0.1, -30, 30)))
    net = np.abs(np.cos(chest.x * 45.0 + rng.uniform(0, 6))) * np.abs(np.cos(chest.y * 45.0 + rng.uniform(0, 6)))
    chest.add(0.14 * _strength(chest) * lower * (net < 0.25) * chest.lungs + 0.04 * lower * chest.lungs)


def _subcutaneous_emphysema(chest: Chest, rng: np.random.Generator) -> None:
    side = _side(rng)
    wall = chest.body * (1.0 - np.clip(chest.lungs * 3, 0, 1)) * (chest.x * side > 0.6)
    streaks = np.clip(np.cos(chest.y * 40.0 + chest.x * 10.0 + rng.uniform(0, 6)) - 0.3, 0, None)
    chest.add(-0.22 * _strength(chest) * wall * streaks)


def _pulmonary_embolism(chest: Chest, rng: np.random.Generator) -> None:
    side = _side(rng)
    cx, cy, _, ry = _lung_geometry(side)
    chest.add(-0.09 * _strength(chest) * gaussian(chest.x, chest.y, cx, cy + 0.2 * ry, 0.2) * chest.lung(side))
    _disk(chest, _lung_point(rng, side, "peripheral"), 0.05, 0.12)


def _adenopathy(chest: Chest, rng: np.random.Generator) -> None:
    for side in (-1, 1):
        for k in range(2):
            chest.add(
                0.2 * _strength(chest) * gaussian(chest.x, chest.y, side * (0.17 + 0.03 * k), -0.12 + 0.1 * k, 0.045)
            )


def _pleural_other(chest: Chest, rng: np.random.Generator) -> None:
    for _ in range(3):
        side = _side(rng)
        cx, cy, rx, ry = _lung_geometry(side)
        t = rng.uniform(-0.6, 0.8)
        px, py = float(cx + side * rx * np.sqrt(max(1 - t**2, 0.05)) * 0.95), cy + t * ry
        chest.add(0.3 * gaussian(chest.x, chest.y, px, py, 0.025, 0.06))


def _tuberculosis(chest: Chest, rng: np.random.Generator) -> None:
    sides = (-1, 1) if rng.random() < 0.4 else (_side(rng),)
    for side in sides:
        _patch(chest, rng, side, "upper", 0.14, 0.13, 6)
    if rng.random() < 0.4:  # cavity: lucent centre with a dense wall
        centre = _lung_point(rng, sides[0], "upper")
        _disk(chest, centre, 0.05, 0.16)
        _disk(chest, centre, 0.03, -0.2)


def _fissure(chest: Chest, rng: np.random.Generator) -> None:
    y = -0.05 + rng.normal(0, 0.03)
    chest.add(0.22 * segment(chest.x, chest.y, (-0.68, y + 0.03), (-0.16, y), 0.012) * chest.lung_right * 1.5)


def _pneumoperitoneum(chest: Chest, rng: np.random.Generator) -> None:
    cx, cy, rx, ry = RIGHT_LUNG
    below = ellipse(chest.x, chest.y, cx, cy + ry + 0.07, rx * 0.8, 0.06, edge=0.2)
    chest.add(-0.28 * _strength(chest) * below * chest.body)


def _clavicle_fracture(chest: Chest, rng: np.random.Generator) -> None:
    side = _side(rng)
    t = rng.uniform(0.35, 0.65)
    px, py = (0.09 + t * 0.53) * side, -0.74 - t * 0.1
    chest.add(-0.2 * gaussian(chest.x, chest.y, px, py, 0.015, 0.05))
    chest.add(0.15 * gaussian(chest.x, chest.y, px + 0.03 * side, py + 0.03, 0.03, 0.02))


def _lobar_atelectasis(chest: Chest, rng: np.random.Generator) -> None:
    side = _side(rng)
    cx, cy, _, ry = _lung_geometry(side)
    wedge = (chest.y < cy - 0.1 * ry + 0.4 * (chest.x - cx) * side) & (chest.y < cy)
    chest.add(0.26 * _strength(chest) * chest.lung(side) * wedge)


def _pulmonary_hypertension(chest: Chest, rng: np.random.Generator) -> None:
    for side in (-1, 1):
        chest.add(0.17 * _strength(chest) * gaussian(chest.x, chest.y, side * 0.21, -0.04, 0.06, 0.08))
    chest.add(0.12 * gaussian(chest.x, chest.y, 0.15, -0.2, 0.05))


def _infarction(chest: Chest, rng: np.random.Generator) -> None:
    side = _side(rng)
    cx, cy, rx, ry = _lung_geometry(side)
    centre = (cx + side * rx * 0.7, cy + ry * rng.uniform(0.2, 0.55))
    _disk(chest, centre, 0.075, 0.22)


def _pneumomediastinum(chest: Chest, rng: np.random.Generator) -> None:
    for side in (-1, 1):
        chest.add(-0.18 * segment(chest.x, chest.y, (side * 0.13, -0.75), (side * 0.15, 0.1), 0.013))


def _hydropneumothorax(chest: Chest, rng: np.random.Generator) -> None:
    side = _side(rng)
    rim, line = _rim(chest, side, 0.22)
    chest.add(-0.12 * rim + 0.1 * line)
    _, cy, _, ry = _lung_geometry(side)
    level = cy + ry * rng.uniform(0.2, 0.4)
    chest.add(0.24 * chest.lung(side) * (chest.y > level))


def _azygos_lobe(chest: Chest, rng: np.random.Generator) -> None:
    d = np.sqrt(((chest.x + 0.05) / 0.2) ** 2 + ((chest.y + 0.75) / 0.35) ** 2)
    arc = np.exp(-0.5 * ((d - 1.0) / 0.06) ** 2) * (chest.x < -0.05)
    chest.add(0.22 * arc * chest.lung_right * 1.3)
    chest.add(0.15 * gaussian(chest.x, chest.y, -0.13, -0.42, 0.03))


def _rounded_atelectasis(chest: Chest, rng: np.random.Generator) -> None:
    side = _side(rng)
    cx, cy, rx, ry = _lung_geometry(side)
    centre = (cx + side * rx * 0.55, cy + ry * 0.55)
    _disk(chest, centre, 0.07, 0.24)
    chest.add(0.12 * segment(chest.x, chest.y, centre, (centre[0] - side * 0.15, centre[1] - 0.12), 0.015))


def _cardiomegaly(chest: Chest, rng: np.random.Generator) -> None:
    # The enlarged heart itself is an anatomy modifier; a denser silhouette makes it visible in small images.
    hcx, hcy, hrx, hry = HEART
    chest.add(0.02 * ellipse(chest.x, chest.y, hcx, hcy + 0.02, hrx * 1.2, hry * 1.2, edge=0.1))


PAINTERS: dict[str, Painter] = {
    "Support Devices": _support_devices,
    "Lung Opacity": _lung_opacity,
    "Pleural Effusion": _pleural_effusion,
    "Atelectasis": _atelectasis,
    "Cardiomegaly": _cardiomegaly,
    "Edema": _edema,
    "Pneumonia": _pneumonia,
    "Consolidation": _consolidation,
    "Pneumothorax": _pneumothorax,
    "Fracture": _fracture,
    "Infiltration": _infiltration,
    "Emphysema": _emphysema,
    "Nodule": _nodule,
    "Tortuous Aorta": _tortuous_aorta,
    "Calcification of the Aorta": _aortic_calcification,
    "Mass": _mass,
    "Hernia": _hernia,
    "Rib Fracture": _rib_fracture,
    "Granuloma": _granuloma,
    "Pleural Thickening": _pleural_thickening,
    "Fibrosis": _fibrosis,
    "Subcutaneous Emphysema": _subcutaneous_emphysema,
    "Lung Lesion": _lung_lesion,
    "Pulmonary Embolism": _pulmonary_embolism,
    "Adenopathy": _adenopathy,
    "Pleural Other": _pleural_other,
    "Tuberculosis": _tuberculosis,
    "Fissure": _fissure,
    "Pneumoperitoneum": _pneumoperitoneum,
    "Clavicle Fracture": _clavicle_fracture,
    "Lobar Atelectasis": _lobar_atelectasis,
    "Pulmonary Hypertension": _pulmonary_hypertension,
    "Infarction": _infarction,
    "Pneumomediastinum": _pneumomediastinum,
    "Hydropneumothorax": _hydropneumothorax,
    "Azygos Lobe": _azygos_lobe,
    "Round(ed) Atelectasis": _rounded_atelectasis,
}
PAINTERS.update(TUBE_PAINTERS)  # RANZCR's lines and tubes, and the landmarks they are read against
# Findings whose only signature is an anatomy modifier.
MODIFIER_ONLY = tuple(name for name in MODIFIERS if name not in PAINTERS)


def has_signature(name: str) -> bool:
    return name in PAINTERS or name in MODIFIERS
