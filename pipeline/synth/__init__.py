"""The synthetic chest X-ray cohort (docs/architecture.md "The synthetic cohort"): radiograph-like images with planted
findings and a known survival model, written as data sets under the real names."""

from pipeline.synth.cohort import generate_cohort, read_params, truth_path
from pipeline.synth.specs import DATASETS, PRESETS, SPECS
from pipeline.synth.survival import SurvivalModel, simulate_survival

__all__ = [
    "DATASETS",
    "PRESETS",
    "SPECS",
    "SurvivalModel",
    "generate_cohort",
    "read_params",
    "simulate_survival",
    "truth_path",
]
