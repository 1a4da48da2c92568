"""Multiple-comparison adjustment of p-values (Holm, Benjamini-Hochberg) through statsmodels.

Holm's step-down is computed here (sorted p times m, m-1, ..., 1, running maximum, capped at 1; equal to
statsmodels' `multipletests(method="holm")`, tests/pipeline/stats/test_multiple.py): statsmodels runs a full
`gc.collect()` on every Holm call, about a second per call in a report process that holds torch.
"""

from __future__ import annotations

import numpy as np
from statsmodels.stats.multitest import multipletests

ADJUST_METHODS = ("holm", "fdr_bh", "bonferroni")


def adjust_pvalues(p: np.ndarray, method: str = "holm") -> np.ndarray:
    """Adjusted p-values for a family of tests; NaN entries stay NaN and do not count in the family.

    method: 'holm' (family-wise error, Holm 1979) or 'fdr_bh' (false discovery rate, Benjamini-Hochberg 1995),
    or 'bonferroni'.
    """
    if method not in ADJUST_METHODS:
        raise ValueError(f"method must be one of {ADJUST_METHODS}, not {method!r}")
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    present = ~np.isnan(p)
    if present.any():
        out[present] = _holm(p[present]) if method == "holm" else multipletests(p[present], method=method)[1]
    return out


def _holm(p: np.ndarray) -> np.ndarray:
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(np.maximum.accumulate(p[order] * np.arange(len(p), 0, -1)), 1.0)
    out = np.empty_like(stepped)
    out[order] = stepped
    return out
