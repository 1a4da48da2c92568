"""What the synthetic cohort holds: per data set its findings, prevalences and sizes, and the size presets.

Every finding column of every packaged card maps to a painter in `findings.py` (a local image change).
Prevalences are per patient and long-tailed like the real data sets; rare findings share weaker signatures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.errors import ConfigError

# The oracle's run folder (pipeline/synth/oracle.py): a reference row of the report, never a real backbone.
ORACLE_BACKBONE = "oracle"
ORACLE_HEAD = "planted"

DATASETS = ("cxrlt24", "chexpert", "shenzhen", "montgomery", "jsrt", "plco", "ranzcr", "scr")

# CXR-LT 24's 40 findings with MIMIC-like, long-tailed per-patient prevalences (30% down to 0.1%).
# "Normal" is not drawn: it is 1 exactly when no other finding is present.
CXRLT24_PREVALENCE: dict[str, float] = {
    "Support Devices": 0.30,
    "Lung Opacity": 0.25,
    "Pleural Effusion": 0.22,
    "Atelectasis": 0.20,
    "Cardiomegaly": 0.20,
    "Edema": 0.12,
    "Pneumonia": 0.07,
    "Consolidation": 0.05,
    "Enlarged Cardiomediastinum": 0.04,
    "Pneumothorax": 0.04,
    "Fracture": 0.02,
    "Infiltration": 0.02,
    "Emphysema": 0.02,
    "Nodule": 0.02,
    "Tortuous Aorta": 0.015,
    "Calcification of the Aorta": 0.01,
    "Mass": 0.01,
    "Hernia": 0.01,
    "Rib Fracture": 0.01,
    "Granuloma": 0.01,
    "Pleural Thickening": 0.01,
    "Fibrosis": 0.008,
    "Subcutaneous Emphysema": 0.008,
    "Lung Lesion": 0.006,
    "Pulmonary Embolism": 0.006,
    "Kyphosis": 0.005,
    "Adenopathy": 0.005,
    "Pleural Other": 0.005,
    "Tuberculosis": 0.004,
    "Fissure": 0.004,
    "Pneumoperitoneum": 0.003,
    "Clavicle Fracture": 0.003,
    "Lobar Atelectasis": 0.003,
    "Pulmonary Hypertension": 0.003,
    "Infarction": 0.002,
    "Pneumomediastinum": 0.002,
    "Hydropneumothorax": 0.002,
    "Azygos Lobe": 0.001,
    "Round(ed) Atelectasis": 0.001,
}
NORMAL = "Normal"

# A finding with at least this prevalence is "common": val/test always get a few positives of it.
COMMON_PREVALENCE = 0.05


@dataclass(frozen=True)
class SynthSpec:
    """One synthetic data set: its findings (column -> per-patient prevalence) and how images are made."""

    name: str
    prevalence: dict[str, float]
    images: int  # at the "small" preset; other presets scale it
    images_per_patient: float  # mean; 1.0 = exactly one image per patient
    split_fractions: dict[str, float]
    uncertain_rate: float = 0.0  # train labels turned into -1 (CheXpert's labeller)
    bit_depth: int = 8
    survival: bool = False
    background_prevalence: dict[str, float] = field(default_factory=dict)  # painted, never labelled
    derived_normal: bool = False
    # How visibly the survival latents (heart size, frailty) show: x the effects in pipeline/synth/render.py.
    latent_gain: float = 1.0
    # Groups of findings of which an image shows at most one (one tube, one tip position): when a patient draws
    # several, the rarest is kept (RANZCR's ETT and NGT states).
    exclusive: tuple[tuple[str, ...], ...] = ()
    # Write ground-truth anatomy masks (both lungs, heart) beside the images (pipeline/synth/masks.py).
    masks: bool = False


def _fractions(paper: dict[str, int], floor: float = 0.15) -> dict[str, float]:
    """Paper split proportions, each present split raised to at least `floor` so small cohorts still
    have positives in val and test."""
    total = sum(paper.values())
    raw = {k: max(v / total, floor if k != "train" else 0.0) for k, v in paper.items()}
    norm = sum(raw.values())
    return {k: v / norm for k, v in raw.items()}


_BACKGROUND = {"Cardiomegaly": 0.1, "Pleural Effusion": 0.08, "Support Devices": 0.05, "Nodule": 0.02}

# RANZCR CLiP's 11 labels (card data_manifests/ranzcr.yaml). Per-patient prevalences: the real train set's tube
# presence (ETT ~28%, NGT ~28%, CVC ~95% of ICU images) with the rarer malpositions raised so a ~100-image test
# split still holds positives of each (real: ETT - Abnormal 0.3%, NGT - Abnormal 0.9%). The rarest stay below
# COMMON_PREVALENCE: a tiny cohort's few val patients cannot hold 3 of every state of an exclusive group.
RANZCR_PREVALENCE: dict[str, float] = {
    "ETT - Abnormal": 0.045,
    "ETT - Borderline": 0.07,
    "ETT - Normal": 0.22,
    "NGT - Abnormal": 0.045,
    "NGT - Borderline": 0.045,
    "NGT - Incompletely Imaged": 0.08,
    "NGT - Normal": 0.18,
    "CVC - Abnormal": 0.12,
    "CVC - Borderline": 0.22,
    "CVC - Normal": 0.45,
    "Swan Ganz Catheter Present": 0.045,
}
# Painted on every RANZCR image, never labelled: the airway (trachea, carina, main bronchi) and the gastric
# bubble, the landmarks a tip position is read against.
TUBE_LANDMARKS = "Tube Landmarks"

SPECS: dict[str, SynthSpec] = {
    "cxrlt24": SynthSpec(
        name="cxrlt24",
        prevalence=CXRLT24_PREVALENCE,
        images=1100,
        images_per_patient=2.5,
        split_fractions=_fractions({"train": 207096, "test": 51775}),
        derived_normal=True,
    ),
    "chexpert": SynthSpec(
        name="chexpert",
        prevalence={
            "Atelectasis": 0.15,
            "Cardiomegaly": 0.12,
            "Consolidation": 0.07,
            "Edema": 0.24,
            "Pleural Effusion": 0.38,
        },
        images=500,
        images_per_patient=2.0,
        split_fractions=_fractions({"train": 191027, "val": 202, "test": 518}),
        uncertain_rate=0.08,
    ),
    "shenzhen": SynthSpec(
        name="shenzhen",
        prevalence={"Tuberculosis": 0.5},
        images=400,
        images_per_patient=1.0,
        split_fractions=_fractions({"train": 463, "val": 65, "test": 134}),
        background_prevalence=_BACKGROUND,
        masks=True,  # as the real Shenzhen lung masks
    ),
    "montgomery": SynthSpec(
        name="montgomery",
        prevalence={"Tuberculosis": 0.42},
        images=300,  # more subjects than the real 138: a test split that can show a difference from chance
        images_per_patient=1.0,
        split_fractions=_fractions({"train": 96, "val": 14, "test": 28}),
        background_prevalence=_BACKGROUND,
        masks=True,  # as the real Montgomery left/right lung masks
    ),
    "jsrt": SynthSpec(
        name="jsrt",
        prevalence={"Nodule": 0.62},
        images=400,
        images_per_patient=1.0,
        split_fractions=_fractions({"train": 171, "val": 24, "test": 50}),
        bit_depth=16,
        masks=True,  # the real JSRT has the SCR masks (lungs, heart, clavicles)
    ),
    "plco": SynthSpec(
        name="plco",
        prevalence={},
        images=1200,  # ~230 test subjects: the planted hazard separates the risk groups at p < 0.001
        images_per_patient=1.0,
        split_fractions=_fractions({"train": 133543, "val": 19099, "test": 38058}),
        survival=True,
        background_prevalence=_BACKGROUND,
        # At gain 1 the demo's frozen features explain R^2 0.32 (heart) and 0.49 (frailty) of the latents and the
        # best probe's C-index sits 0.16 below the oracle's; at ~3 (heart 0.4, bone 0.45, texture 1.2 per SD)
        # the gap is 0.05-0.07 (docs/architecture.md, "The synthetic cohort").
        latent_gain=3.0,
    ),
    "ranzcr": SynthSpec(
        name="ranzcr",
        prevalence=RANZCR_PREVALENCE,
        images=500,
        images_per_patient=1.5,  # the real set: ~9 images per patient over an ICU stay
        # No public test labels (Kaggle's were hidden): a 70/10/20 patient-level split of train.csv.
        split_fractions=_fractions({"train": 70, "val": 10, "test": 20}),
        background_prevalence={TUBE_LANDMARKS: 1.0},
        exclusive=(
            ("ETT - Abnormal", "ETT - Borderline", "ETT - Normal"),
            ("NGT - Abnormal", "NGT - Borderline", "NGT - Incompletely Imaged", "NGT - Normal"),
        ),
    ),
    # Segmentation (issue 24): JSRT-like radiographs with ground-truth lungs and heart (the real SCR masks also
    # outline the clavicles, which the cohort does not paint). No finding is labelled; the background findings
    # (cardiomegaly among them) and the patients' heart-size latent make the anatomy vary around its mean shape.
    "scr": SynthSpec(
        name="scr",
        prevalence={},
        images=400,
        images_per_patient=1.0,
        split_fractions=_fractions({"train": 171, "val": 24, "test": 52}),
        bit_depth=16,
        background_prevalence=_BACKGROUND,
        masks=True,
    ),
}


@dataclass(frozen=True)
class SizePreset:
    """Image counts relative to each spec's "small" count, and the image side in pixels."""

    name: str
    scale: float
    image_size: int
    force_rare: bool  # guarantee positives of every finding in every split (when the split is big enough)


PRESETS: dict[str, SizePreset] = {
    "tiny": SizePreset("tiny", 0.0, 64, force_rare=False),  # fixed counts below
    "small": SizePreset("small", 1.0, 128, force_rare=True),
    "medium": SizePreset("medium", 10.0, 224, force_rare=True),
}
TINY_IMAGES = {
    "cxrlt24": 160, "chexpert": 80, "shenzhen": 70, "montgomery": 50, "jsrt": 50, "plco": 100, "ranzcr": 80,
    "scr": 50,
}  # fmt: skip


def preset(size: str) -> SizePreset:
    if size not in PRESETS:
        raise ConfigError(f"--size {size!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[size]


def image_count(spec: SynthSpec, size: str) -> int:
    if size == "tiny":
        return TINY_IMAGES[spec.name]
    return round(spec.images * preset(size).scale)


def resolve_datasets(datasets: list[str] | tuple[str, ...] | None) -> list[str]:
    if not datasets:
        return list(DATASETS)
    unknown = [d for d in datasets if d not in SPECS]
    if unknown:
        raise ConfigError(f"--datasets: unknown synthetic data set(s) {unknown}; choose from {', '.join(DATASETS)}")
    return list(dict.fromkeys(datasets))
