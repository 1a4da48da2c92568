"""Statistics a paper can print: metrics, bootstrap CIs, paired permutation and DeLong tests, survival.

Entry points: `evaluate_predictions` / `evaluate_survival` / `compare_predictions` (tidy DataFrames in the
results.parquet schema), `kaplan_meier_groups` (KM figure data), `paired_permutation_test`, `delong_test`,
`adjust_pvalues`, `bootstrap_metrics`.
"""

from pipeline.stats.bootstrap import BootstrapResult, bootstrap_metrics
from pipeline.stats.classification import evaluate_predictions
from pipeline.stats.comparisons import compare_predictions
from pipeline.stats.delong import DeLongResult, delong_test
from pipeline.stats.metrics import point_metrics
from pipeline.stats.multiple import adjust_pvalues
from pipeline.stats.permutation import paired_permutation_test
from pipeline.stats.survival import KMCurve, KMGroups, kaplan_meier_groups
from pipeline.stats.survival_rows import evaluate_survival, risk_groups

__all__ = [
    "BootstrapResult",
    "DeLongResult",
    "KMCurve",
    "KMGroups",
    "adjust_pvalues",
    "bootstrap_metrics",
    "compare_predictions",
    "delong_test",
    "evaluate_predictions",
    "evaluate_survival",
    "kaplan_meier_groups",
    "paired_permutation_test",
    "point_metrics",
    "risk_groups",
]
