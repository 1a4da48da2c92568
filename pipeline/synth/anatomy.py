"""A radiograph-like frontal chest image: body, lung fields, mediastinum and heart, spine, ribs, clavicles.

Coordinates are anatomical and normalised: x from -1 (image left = the patient's right in a PA view) to 1,
y from -1 (top) to 1 (bottom). A random pose (scale, shift, small rotation, rare left/right flip) maps image
pixels to these coordinates, so every structure and every planted finding moves with the patient. Values are
X-ray attenuation-like in [0, 1] (air dark, bone bright) before exposure and noise are applied.

Label-independent variation (`Habitus` per patient, the rest per image) makes two views of one image tell it
apart from other images, as real radiographs do: body width and soft tissue, positioning (scale = field of
view, shift, rotation), exposure (contrast, brightness, gamma, a heel-effect gradient, noise), collimation
edges, a side marker and burned-in text, and snaps/ECG buttons on the chest wall (never over the lungs, so they
do not mimic nodules or devices).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

RIGHT_LUNG = (-0.40, -0.05, 0.29, 0.60)  # cx, cy, rx, ry
LEFT_LUNG = (0.40, -0.03, 0.27, 0.58)
HEART = (0.1, 0.32, 0.3, 0.22)
AORTIC_KNOB = (0.14, -0.36, 0.07, 0.06)


@dataclass(frozen=True)
class Anatomy:
    """Per-image anatomy; findings such as Cardiomegaly or Emphysema change these before rendering."""

    heart: float = 1.0  # heart silhouette scale
    mediastinum: float = 1.0  # upper mediastinum width scale
    lungs: float = 1.0  # lung field scale (hyperinflation > 1)
    lucency: float = 0.0  # extra darkening of the lung fields
    bone: float = 1.0  # bone brightness (the survival layer's "frailty" lowers it)
    texture: float = 0.03  # fine lung texture amplitude (the frailty texture)
    spine_curve: float = 0.0  # lateral spine curvature
    aorta: float = 1.0  # aortic knob scale
    view: str = "PA"


@dataclass(frozen=True)
class Habitus:
    """A patient's build, independent of every label: thorax width and soft-tissue thickness."""

    width: float = 1.0  # horizontal scale of the whole thorax (heart-to-thorax ratio unchanged)
    soft_tissue: float = 0.0  # extra soft-tissue density of the body outline (obesity, breast shadows)
    body_width: float = 1.0  # body outline width relative to the thorax

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Habitus:
        return cls(
            width=float(rng.uniform(0.93, 1.07)),
            soft_tissue=float(rng.uniform(0.0, 0.08)),
            body_width=float(rng.uniform(0.97, 1.12)),
        )


@dataclass
class Chest:
    """An image being painted: anatomical coordinates of every pixel, the image, and soft masks."""

    x: np.ndarray
    y: np.ndarray
    image: np.ndarray
    body: np.ndarray
    lung_right: np.ndarray
    lung_left: np.ndarray
    anatomy: Anatomy
    rng: np.random.Generator  # per-image randomness (jitter of findings)
    heart: np.ndarray | None = None  # soft heart silhouette (the ground-truth mask, pipeline/synth/masks.py)
    # (finding, anatomical points) of each line drawn (pipeline/synth/tubes.py `draw_line`), its tip last
    lines: list[tuple[str, list[tuple[float, float]]]] = field(default_factory=list)

    @property
    def lungs(self) -> np.ndarray:
        return self.lung_right + self.lung_left

    def lung(self, side: int) -> np.ndarray:
        """Soft mask of one lung: side -1 = right lung (image left), +1 = left lung."""
        return self.lung_right if side < 0 else self.lung_left

    def add(self, values: np.ndarray) -> None:
        self.image += values.astype(np.float32, copy=False)


def ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float, edge: float = 0.04):
    """Soft elliptical mask (1 inside, 0 outside, a sigmoid edge `edge` wide in radius units)."""
    d = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return 1.0 / (1.0 + np.exp(np.clip((d - 1.0) / edge, -30, 30)))


def gaussian(x: np.ndarray, y: np.ndarray, cx: float, cy: float, r: float, ry: float | None = None) -> np.ndarray:
    ry = r if ry is None else ry
    return np.exp(-0.5 * (((x - cx) / r) ** 2 + ((y - cy) / ry) ** 2))


def segment(x: np.ndarray, y: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], width: float):
    """Soft line segment from p0 to p1 (Gaussian profile of `width`)."""
    (x0, y0), (x1, y1) = p0, p1
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy + 1e-9), 0.0, 1.0)
    dist2 = (x - x0 - t * dx) ** 2 + (y - y0 - t * dy) ** 2
    return np.exp(-0.5 * dist2 / width**2)


def new_chest(
    size: int, anatomy: Anatomy, rng: np.random.Generator, habitus: Habitus | None = None, variation: bool = True
) -> Chest:
    """Render the normal anatomy of one image with a random pose (the wider positioning ranges, and snaps/ECG
    buttons, only with `variation`)."""
    habitus = habitus or Habitus()
    v, u = np.mgrid[0:size, 0:size].astype(np.float32)
    u = u * (2.0 / (size - 1)) - 1.0
    v = v * (2.0 / (size - 1)) - 1.0
    # Python floats keep the float32 grids float32 (numpy scalars would promote them to float64).
    wide = 1.0 if variation else 0.0
    scale = float(rng.uniform(0.9 - 0.04 * wide, 1.05 + 0.01 * wide))  # field of view
    theta = float(rng.normal(0.0, 0.035 + 0.015 * wide))
    shift_x, shift_y = rng.normal(0.0, 0.035 + 0.015 * wide, size=2).tolist()
    cos, sin = float(np.cos(theta)), float(np.sin(theta))
    x = ((cos * u + sin * v) / scale - shift_x) / habitus.width
    y = (-sin * u + cos * v) / scale - shift_y
    if rng.random() < 0.03:  # rare mirrored image (situs / flipped acquisition)
        x = -x
    a = anatomy
    heart_scale = a.heart * (1.08 if a.view == "AP" else 1.0)

    body = ellipse(x, y, 0.0, 0.18, 0.95 * habitus.body_width, 1.22, edge=0.03)
    lr = ellipse(x, y, RIGHT_LUNG[0] * a.lungs, RIGHT_LUNG[1], RIGHT_LUNG[2] * a.lungs, RIGHT_LUNG[3] * a.lungs)
    ll = ellipse(x, y, LEFT_LUNG[0] * a.lungs, LEFT_LUNG[1], LEFT_LUNG[2] * a.lungs, LEFT_LUNG[3] * a.lungs)
    hcx, hcy, hrx, hry = HEART
    heart = ellipse(x, y, hcx, hcy + 0.05 * (heart_scale - 1), hrx * heart_scale, hry * heart_scale, edge=0.05)
    upper = 1.0 / (1.0 + np.exp(np.clip((y - 0.15) / 0.04, -30, 30)))
    mediastinum = ellipse(x, y, 0.02, -0.35, 0.11 * a.mediastinum, 0.7, edge=0.08) * upper
    open_lung = (1.0 - heart) * (1.0 - mediastinum)
    lr, ll = lr * open_lung, ll * open_lung

    image = 0.06 + (0.44 + habitus.soft_tissue) * body
    image = image - (0.28 + a.lucency) * (lr + ll) + 0.10 * heart + 0.06 * mediastinum
    knob = ellipse(
        x,
        y,
        AORTIC_KNOB[0] + 0.03 * (a.aorta - 1),
        AORTIC_KNOB[1],
        AORTIC_KNOB[2] * a.aorta,
        AORTIC_KNOB[3] * a.aorta,
        edge=0.1,
    )
    image = image + 0.08 * knob

    spine_x = a.spine_curve * np.sin(np.pi * (y + 1.0) / 2.0)
    spine = np.exp(-0.5 * ((x - spine_x) / 0.055) ** 4) * body
    image = image + a.bone * 0.13 * spine * (0.75 + 0.25 * np.cos(y * np.pi * 11.0))
    lungs_raw = lr + ll
    phase = (y + 0.45 * x**2) * 6.5
    ribs = np.clip(np.cos(2 * np.pi * phase) - 0.55, 0.0, None) / 0.45
    image = image + a.bone * 0.11 * ribs * np.clip(lungs_raw * 1.4, 0, 1)
    for side in (-1.0, 1.0):
        image = image + a.bone * 0.14 * segment(x, y, (0.09 * side, -0.74), (0.62 * side, -0.84), 0.022)

    freq = rng.uniform(25.0, 35.0, size=3).tolist()
    angle = rng.uniform(0.0, np.pi, size=3).tolist()
    phases = rng.uniform(0.0, 2 * np.pi, size=3).tolist()
    texture = sum(
        np.cos(f * (float(np.cos(t)) * x + float(np.sin(t)) * y) + p)
        for f, t, p in zip(freq, angle, phases, strict=True)
    )
    image = image + a.texture * texture / 3.0 * lungs_raw
    if variation:
        image = image + _buttons(x, y, rng)
    return Chest(
        x=x,
        y=y,
        image=image.astype(np.float32),
        body=body,
        lung_right=lr,
        lung_left=ll,
        anatomy=a,
        rng=rng,
        heart=heart,
    )


def _buttons(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Snaps / ECG electrodes: small bright rings on the lateral chest wall and shoulders (none, often)."""
    out = np.zeros_like(x)
    for _ in range(int(rng.choice([0, 0, 1, 2, 3]))):
        side = 1.0 if rng.random() < 0.5 else -1.0
        cx, cy = side * float(rng.uniform(0.74, 0.9)), float(rng.uniform(-0.85, 0.7))
        d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
        out += 0.3 * np.exp(-0.5 * ((d - 0.035) / 0.01) ** 2)
    return out


def _overlays(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Detector-frame overlays (fixed to the image, not the patient): a side marker ("L"/"R" block letter in a
    corner), sometimes a burned-in text strip, and collimation edges. Returns (values, mask) to blend in."""
    values = np.zeros((size, size), dtype=np.float32)
    mask = np.zeros((size, size), dtype=np.float32)
    unit = max(2, size // 40)
    # side marker: an L-shaped (or R-ish: L plus a bar) block in one of the four corners
    top, left = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
    r0 = int(rng.integers(unit, 4 * unit)) if top else size - int(rng.integers(5 * unit, 8 * unit))
    c0 = int(rng.integers(unit, 4 * unit)) if left else size - int(rng.integers(5 * unit, 8 * unit))
    h, w = 4 * unit, 3 * unit
    mask[r0 : r0 + h, c0 : c0 + unit] = 1.0
    mask[r0 + h - unit : r0 + h, c0 : c0 + w] = 1.0
    if rng.random() < 0.5:
        mask[r0 : r0 + unit, c0 : c0 + w] = 1.0
    values[mask > 0] = float(rng.uniform(0.85, 1.0))
    if rng.random() < 0.5:  # burned-in text: a row of small blocks along the top or bottom edge
        row = int(rng.integers(unit, 3 * unit)) if rng.random() < 0.5 else size - int(rng.integers(2 * unit, 4 * unit))
        start = int(rng.integers(unit, size // 2))
        for k in range(int(rng.integers(4, 10))):
            if rng.random() < 0.8:
                col = start + k * (unit + unit // 2 + 1)
                mask[row : row + unit, col : col + unit] = 1.0
                values[row : row + unit, col : col + unit] = 0.9
    # collimation: unexposed (bright) bands on some edges
    level = float(rng.uniform(0.75, 0.95))
    for edge in range(4):
        if rng.random() < 0.5:
            width = int(rng.uniform(0.02, 0.09) * size)
            band = (slice(0, width), slice(None)), (slice(size - width, size), slice(None))
            band += (slice(None), slice(0, width)), (slice(None), slice(size - width, size))
            mask[band[edge]] = 1.0
            values[band[edge]] = level
    return values, mask


def expose(chest: Chest, rng: np.random.Generator, bit_depth: int = 8, variation: bool = True) -> np.ndarray:
    """Exposure (contrast, brightness, gamma, heel-effect gradient), collimation, markers and quantum noise,
    then quantise to uint8 or uint16. Without `variation`: the milder exposure of generator v1, no gradient,
    collimation or markers."""
    image = chest.image
    size = image.shape[0]
    if not variation:
        contrast, brightness, gamma = rng.uniform(0.88, 1.12), rng.normal(0.0, 0.035), rng.uniform(0.88, 1.12)
        image = np.clip((image - 0.35) * contrast + 0.35 + brightness, 0.0, 1.0) ** gamma
        image = np.clip(image + rng.normal(0.0, rng.uniform(0.008, 0.025), size=image.shape), 0.0, 1.0)
        return _quantise(image, bit_depth)
    contrast = rng.uniform(0.8, 1.2)
    brightness = rng.normal(0.0, 0.045)
    gamma = rng.uniform(0.82, 1.2)
    image = (image - 0.35) * contrast + 0.35 + brightness
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    angle = float(rng.uniform(0.0, 2 * np.pi))
    heel = float(rng.uniform(0.0, 0.06))
    image = image + heel * (float(np.cos(angle)) * ramp[None, :] + float(np.sin(angle)) * ramp[:, None])
    image = np.clip(image, 0.0, 1.0) ** gamma
    values, mask = _overlays(size, rng)
    image = image * (1.0 - mask) + values * mask
    image = image + rng.normal(0.0, rng.uniform(0.008, 0.03), size=image.shape)
    return _quantise(np.clip(image, 0.0, 1.0), bit_depth)


def _quantise(image: np.ndarray, bit_depth: int) -> np.ndarray:
    if bit_depth == 16:
        return np.round(image * 65535.0).astype(np.uint16)
    return np.round(image * 255.0).astype(np.uint8)
