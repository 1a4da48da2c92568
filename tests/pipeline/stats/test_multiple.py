from __future__ import annotations

import numpy as np
import pytest

from pipeline.stats.multiple import adjust_pvalues


def test_holm_and_bh_by_hand_with_nan_left_out():
    p = np.array([0.01, np.nan, 0.04, 0.03, 0.2])
    holm = adjust_pvalues(p, "holm")
    # Holm over the 4 present: sorted 0.01, 0.03, 0.04, 0.2 -> 0.04, 0.09, 0.09 (monotone), 0.2
    np.testing.assert_allclose(holm[[0, 3, 2, 4]], [0.04, 0.09, 0.09, 0.2])
    assert np.isnan(holm[1])
    bh = adjust_pvalues(p, "fdr_bh")
    # BH: 0.01*4/1=0.04, 0.03*4/2=0.06, 0.04*4/3=0.0533 -> min over later ranks, 0.2
    np.testing.assert_allclose(bh[[0, 3, 2, 4]], [0.04, 0.05333333, 0.05333333, 0.2], rtol=1e-6)
    with pytest.raises(ValueError, match="method"):
        adjust_pvalues(p, "sidak-ish")


@pytest.mark.parametrize("seed", range(5))
def test_holm_equals_statsmodels_with_ties_and_large_p(seed):
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(seed)
    p = np.round(rng.uniform(0, 1, size=int(rng.integers(1, 30))), 2)  # rounded: ties
    p[: len(p) // 3] = rng.uniform(0, 0.01, size=len(p) // 3)
    np.testing.assert_array_equal(adjust_pvalues(p, "holm"), multipletests(p, method="holm")[1])
