"""Former home of the evaluation entry points, kept as a re-export for older imports; the code lives by job in
tables.py (checks), classification.py, survival_rows.py and comparisons.py."""

from pipeline.stats.classification import THRESHOLD_METRICS, evaluate_predictions
from pipeline.stats.comparisons import compare_predictions
from pipeline.stats.survival_rows import SURVIVAL_METRICS, evaluate_survival, risk_groups
from pipeline.stats.tables import PREDICTION_COLUMNS, RESULT_COLUMNS, RUN_COLUMNS, SURVIVAL_COLUMNS

__all__ = [
    "PREDICTION_COLUMNS",
    "RESULT_COLUMNS",
    "RUN_COLUMNS",
    "SURVIVAL_COLUMNS",
    "SURVIVAL_METRICS",
    "THRESHOLD_METRICS",
    "compare_predictions",
    "evaluate_predictions",
    "evaluate_survival",
    "risk_groups",
]
