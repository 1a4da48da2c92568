"""Lines and tubes (RANZCR CLiP's labels): thin radio-opaque curves whose tip is planted normal, borderline or
abnormal against the anatomy the synthetic chest is drawn with (pipeline/synth/anatomy.py).

Landmarks, in the anatomical coordinates (x -1..1 image left to right, the patient's right on the image left in
a PA view; y -1 top .. 1 bottom; about 0.05 units to a centimetre): the carina at CARINA with the trachea above
it and the main bronchi below; the oesophagus just left of the midline, the gastro-oesophageal junction (GOJ)
under the left hemidiaphragm (the left lung's lower edge) and the stomach's fundus (the gastric bubble) below it;
the superior vena cava (SVC) along the right mediastinal border down to the cavo-atrial junction (CAJ) at the
heart's upper right border. The `Tube Landmarks` painter draws the airway and the gastric bubble on every
RANZCR image (never labelled), so a tip is read against them as a radiologist reads it.

Tip positions (RANZCR's and the usual radiology criteria):
- ETT: normal 3-7 cm above the carina; borderline 1-2.5 cm above it or 7.5-9 cm (high); abnormal in a main
  bronchus (past the carina) or above the thoracic inlet.
- NGT: normal in the stomach; borderline at the GOJ; abnormal with the tip in the oesophagus (above the
  diaphragm) or down a bronchus into the lung; incompletely imaged: the tube leaves the image before its tip.
- CVC (right or left internal jugular, or subclavian): normal tip at the lower SVC / CAJ; borderline high in the
  SVC or just inside the right atrium; abnormal deep in the right atrium / ventricle, or in the wrong vessel
  (up the internal jugular, across into the contralateral brachiocephalic vein).
- Swan-Ganz: through the SVC, right atrium and ventricle into the pulmonary trunk and the right pulmonary artery.

Each painter takes the patient's generator for the route and tip (the same on every image of a patient) and
jitters the tip a little per image through `chest.rng`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from pipeline.synth.anatomy import HEART, LEFT_LUNG, Chest, ellipse, segment

Point = tuple[float, float]

CARINA: Point = (0.02, -0.22)
RIGHT_BRONCHUS: Point = (-0.2, -0.07)  # end of the right main bronchus (image left)
LEFT_BRONCHUS: Point = (0.24, -0.04)
OESOPHAGUS_X = 0.07
GOJ: Point = (0.16, LEFT_LUNG[1] + LEFT_LUNG[3] + 0.04)  # just under the left hemidiaphragm
STOMACH: Point = (0.36, GOJ[1] + 0.15)
CAJ: Point = (-0.1, HEART[1] - HEART[3] - 0.02)  # cavo-atrial junction, the heart's upper right border
SVC_TOP: Point = (-0.09, -0.6)
CM = 0.05  # anatomical units per centimetre (the lungs are ~24 cm tall)

TUBE_AMP = 0.4  # a radio-opaque stripe: brighter than rib
TUBE_WIDTH = 0.016


def curve(points: list[Point], smooth: int = 2) -> list[Point]:
    """Chaikin-smoothed polyline through `points` (ends kept)."""
    pts = [tuple(map(float, p)) for p in points]
    for _ in range(smooth):
        out = [pts[0]]
        for (x0, y0), (x1, y1) in itertools.pairwise(pts):
            out += [(0.75 * x0 + 0.25 * x1, 0.75 * y0 + 0.25 * y1), (0.25 * x0 + 0.75 * x1, 0.25 * y0 + 0.75 * y1)]
        out.append(pts[-1])
        pts = out
    return pts


def draw_line(chest: Chest, points: list[Point], amp: float = TUBE_AMP, width: float = TUBE_WIDTH) -> None:
    """Add a thin bright curve along the smoothed polyline (the maximum over its segments: no brighter joints);
    the polyline is recorded in `chest.lines` (its last point the tip; `paint` names the finding)."""
    pts = curve(points)
    chest.lines.append(("", pts))
    line = np.zeros_like(chest.x)
    for p0, p1 in itertools.pairwise(pts):
        np.maximum(line, segment(chest.x, chest.y, p0, p1, width), out=line)
    chest.add(amp * line)


def _jitter(chest: Chest, point: Point, sd: float = 0.008) -> Point:
    dx, dy = chest.rng.normal(0.0, sd, size=2).tolist()
    return point[0] + dx, point[1] + dy


def _toward(a: Point, b: Point, t: float) -> Point:
    return a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])


# --- landmarks ---------------------------------------------------------------------------------------------


def _landmarks(chest: Chest, rng: np.random.Generator) -> None:
    """The airway (a lucent trachea to the carina, the main bronchi) and the gastric bubble."""
    air = np.zeros_like(chest.x)
    for p0, p1, width in (
        ((0.02, -1.15), CARINA, 0.034),
        (CARINA, RIGHT_BRONCHUS, 0.024),
        (CARINA, LEFT_BRONCHUS, 0.022),
    ):
        np.maximum(air, segment(chest.x, chest.y, p0, p1, width), out=air)
    chest.add(-0.07 * air)
    chest.add(-0.1 * ellipse(chest.x, chest.y, STOMACH[0] + 0.02, STOMACH[1] - 0.03, 0.12, 0.06, edge=0.15))


# --- endotracheal tube -------------------------------------------------------------------------------------


def _ett(chest: Chest, tip: Point, via_bronchus: bool = False) -> None:
    top = (0.03, -1.25)
    points = [top, _toward(top, (CARINA[0] + 0.01, min(tip[1], CARINA[1])), 0.6)]  # down the trachea
    if via_bronchus:
        points += [(CARINA[0], CARINA[1] - 0.02), tip]
    else:
        points.append(tip)
    draw_line(chest, points, amp=0.06, width=0.03)  # the tube's wall
    draw_line(chest, points)  # its radio-opaque stripe


def _ett_above(chest: Chest, rng: np.random.Generator, lo_cm: float, hi_cm: float) -> None:
    height = float(rng.uniform(lo_cm, hi_cm)) * CM
    _ett(chest, _jitter(chest, (CARINA[0] + 0.005, CARINA[1] - height)))


def _ett_normal(chest: Chest, rng: np.random.Generator) -> None:
    _ett_above(chest, rng, 3.0, 7.0)


def _ett_borderline(chest: Chest, rng: np.random.Generator) -> None:
    if rng.random() < 0.6:
        _ett_above(chest, rng, 1.0, 2.5)  # close to the carina
    else:
        _ett_above(chest, rng, 7.5, 9.0)  # high


def _ett_abnormal(chest: Chest, rng: np.random.Generator) -> None:
    if rng.random() < 0.65:  # down the right main bronchus (the usual too-deep intubation)
        tip = _toward(CARINA, RIGHT_BRONCHUS, float(rng.uniform(0.45, 0.9)))
        _ett(chest, _jitter(chest, tip), via_bronchus=True)
    else:  # above the thoracic inlet
        _ett_above(chest, rng, 11.0, 13.0)


# --- nasogastric tube --------------------------------------------------------------------------------------


def _ngt(chest: Chest, rng: np.random.Generator, tail: list[Point]) -> None:
    points = [(OESOPHAGUS_X - 0.02, -1.25), (OESOPHAGUS_X, -0.5), *tail]
    draw_line(chest, points, amp=0.34, width=0.015)


def _ngt_normal(chest: Chest, rng: np.random.Generator) -> None:
    tip = (STOMACH[0] + float(rng.uniform(-0.04, 0.08)), STOMACH[1] + float(rng.uniform(-0.02, 0.08)))
    _ngt(chest, rng, [(OESOPHAGUS_X + 0.01, 0.2), GOJ, _jitter(chest, tip)])


def _ngt_borderline(chest: Chest, rng: np.random.Generator) -> None:
    tip = (GOJ[0] + float(rng.uniform(-0.02, 0.03)), GOJ[1] + float(rng.uniform(-0.05, 0.03)))
    _ngt(chest, rng, [(OESOPHAGUS_X + 0.01, 0.2), _jitter(chest, tip)])


def _ngt_abnormal(chest: Chest, rng: np.random.Generator) -> None:
    if rng.random() < 0.5:  # tip in the oesophagus, above the diaphragm
        _ngt(chest, rng, [_jitter(chest, (OESOPHAGUS_X + 0.01, float(rng.uniform(-0.15, 0.3))))])
    else:  # into the airway: down the right main bronchus into the right lower lung
        tip = (float(rng.uniform(-0.42, -0.3)), float(rng.uniform(0.2, 0.4)))
        points = [(0.02, -1.25), (CARINA[0], -0.5), CARINA, RIGHT_BRONCHUS, _jitter(chest, tip)]
        draw_line(chest, points, amp=0.34, width=0.015)


def _ngt_incomplete(chest: Chest, rng: np.random.Generator) -> None:
    """The tube runs on below the field of view: its tip is not on the image."""
    _ngt(chest, rng, [(OESOPHAGUS_X + 0.01, 0.2), GOJ, (GOJ[0] + float(rng.uniform(-0.05, 0.1)), 1.6)])


# --- central venous catheter -------------------------------------------------------------------------------

_ROUTES: dict[str, list[Point]] = {
    "right_ij": [(-0.24, -1.2), (-0.17, -0.8), SVC_TOP],
    "right_subclavian": [(-0.78, -0.82), (-0.4, -0.74), (-0.16, -0.68), SVC_TOP],
    "left_ij": [(0.26, -1.2), (0.2, -0.78), (0.05, -0.66), SVC_TOP],
    "left_subclavian": [(0.78, -0.84), (0.4, -0.75), (0.08, -0.67), SVC_TOP],
}


def _cvc(chest: Chest, route: str, tail: list[Point]) -> None:
    draw_line(chest, [*_ROUTES[route], *tail], amp=0.36, width=0.015)


def _svc_point(depth: float) -> Point:
    """A point on the SVC from its top (0) to the cavo-atrial junction (1) and on into the atrium (> 1)."""
    return _toward(SVC_TOP, CAJ, depth)


def _route(rng: np.random.Generator) -> str:
    return str(rng.choice(list(_ROUTES), p=[0.5, 0.2, 0.15, 0.15]))


def _cvc_normal(chest: Chest, rng: np.random.Generator) -> None:
    _cvc(chest, _route(rng), [_jitter(chest, _svc_point(float(rng.uniform(0.8, 1.0))))])


def _cvc_borderline(chest: Chest, rng: np.random.Generator) -> None:
    depth = float(rng.uniform(0.25, 0.45)) if rng.random() < 0.5 else float(rng.uniform(1.12, 1.3))
    _cvc(chest, _route(rng), [_jitter(chest, _svc_point(depth))])


def _cvc_abnormal(chest: Chest, rng: np.random.Generator) -> None:
    kind = rng.random()
    route = _route(rng)
    if kind < 0.45:  # deep in the right atrium / ventricle
        tip = (float(rng.uniform(-0.05, 0.08)), HEART[1] + float(rng.uniform(-0.02, 0.08)))
        _cvc(chest, route, [CAJ, _jitter(chest, tip)])
    elif kind < 0.75 and "subclavian" in route:  # up the internal jugular vein of its side
        side = -1.0 if route.startswith("right") else 1.0
        path = _ROUTES[route][:-1]
        draw_line(chest, [*path, (side * 0.2, -0.92), _jitter(chest, (side * 0.23, -1.05))], amp=0.36, width=0.015)
    else:  # across into the contralateral brachiocephalic / subclavian vein
        side = 1.0 if route.startswith("right") else -1.0
        path = _ROUTES[route][:-1]
        draw_line(chest, [*path, (side * 0.1, -0.68), _jitter(chest, (side * 0.4, -0.76))], amp=0.36, width=0.015)


# --- pulmonary artery (Swan-Ganz) catheter -----------------------------------------------------------------


def _swan_ganz(chest: Chest, rng: np.random.Generator) -> None:
    ra = (-0.1, HEART[1] + 0.05)
    rv = (0.12, HEART[1] + 0.12)
    trunk = (0.14, HEART[1] - 0.3)
    tip = (float(rng.uniform(-0.3, -0.18)), float(rng.uniform(-0.12, -0.02)))
    points = [*_ROUTES["right_ij"], CAJ, ra, rv, trunk, (0.0, -0.12), _jitter(chest, tip)]
    draw_line(chest, points, amp=0.38, width=0.017)


Painter = Callable[[Chest, np.random.Generator], None]

TUBE_PAINTERS: dict[str, Painter] = {
    "ETT - Abnormal": _ett_abnormal,
    "ETT - Borderline": _ett_borderline,
    "ETT - Normal": _ett_normal,
    "NGT - Abnormal": _ngt_abnormal,
    "NGT - Borderline": _ngt_borderline,
    "NGT - Incompletely Imaged": _ngt_incomplete,
    "NGT - Normal": _ngt_normal,
    "CVC - Abnormal": _cvc_abnormal,
    "CVC - Borderline": _cvc_borderline,
    "CVC - Normal": _cvc_normal,
    "Swan Ganz Catheter Present": _swan_ganz,
    "Tube Landmarks": _landmarks,
}
