from __future__ import annotations

import numpy as np
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.datasets import load_gbsg2, load_rossi
from lifelines.statistics import logrank_test
from lifelines.utils import concordance_index
from sklearn.metrics import roc_auc_score

from pipeline.errors import ConfigError
from pipeline.stats.survival import c_index, cox_hazard_ratio, kaplan_meier_groups, time_dependent_auroc


@pytest.fixture
def gbsg2():
    data = load_gbsg2()
    # A risk score of the kind a model gives: more positive nodes, larger tumour = higher risk.
    risk = np.log1p(data["pnodes"].to_numpy()) + data["tsize"].to_numpy() / 50
    return data["time"].to_numpy(float) / 365.25, data["cens"].to_numpy(float), risk


def test_km_groups_and_logrank_equal_lifelines(gbsg2):
    time, event, risk = gbsg2
    groups = kaplan_meier_groups(time, event, risk, at_times=np.array([0.0, 1.0, 2.0, 5.0]))
    assert groups.threshold == pytest.approx(np.median(risk))
    high = risk > groups.threshold
    for curve, mask in ((groups.low, ~high), (groups.high, high)):
        ref = KaplanMeierFitter().fit(time[mask], event[mask])
        np.testing.assert_allclose(curve.survival, ref.survival_function_.iloc[:, 0].to_numpy())
        np.testing.assert_allclose(curve.ci_lower, ref.confidence_interval_.iloc[:, 0].to_numpy())
        np.testing.assert_allclose(curve.ci_upper, ref.confidence_interval_.iloc[:, 1].to_numpy())
        assert curve.endpoint_survival == pytest.approx(float(ref.predict(time.max())))
        assert curve.n == mask.sum() and curve.n_events == event[mask].sum()
        assert curve.at_risk["at_risk"].tolist() == [int((time[mask] >= t).sum()) for t in (0, 1, 2, 5)]
    ref_test = logrank_test(time[~high], time[high], event[~high], event[high])
    assert groups.logrank_p == pytest.approx(ref_test.p_value, rel=1e-12)
    assert groups.high.endpoint_survival < groups.low.endpoint_survival
    assert groups.logrank_p < 1e-6


def test_cox_and_c_index_equal_lifelines_on_rossi():
    rossi = load_rossi()
    result = cox_hazard_ratio(rossi["week"], rossi["arrest"], rossi["prio"])
    ref = CoxPHFitter().fit(rossi[["week", "arrest", "prio"]], "week", "arrest").summary.loc["prio"]
    assert result.hazard_ratio == pytest.approx(ref["exp(coef)"], rel=1e-6)
    assert result.ci_low == pytest.approx(ref["exp(coef) lower 95%"], rel=1e-6)
    assert result.ci_high == pytest.approx(ref["exp(coef) upper 95%"], rel=1e-6)
    assert result.hazard_ratio > 1  # more prior convictions, earlier re-arrest
    # Higher risk must mean earlier events: the C-index of prio as a risk score is above 0.5.
    c = c_index(rossi["week"], rossi["arrest"], rossi["prio"])
    assert c == pytest.approx(concordance_index(rossi["week"], -rossi["prio"], rossi["arrest"]))
    assert c > 0.55


def test_time_dependent_auroc_without_censoring_is_plain_auroc():
    rng = np.random.default_rng(0)
    risk = rng.normal(size=300)
    time = rng.exponential(np.exp(-risk))
    event = np.ones(300)
    value = time_dependent_auroc(time, event, risk, horizon=0.5)
    assert value == pytest.approx(roc_auc_score(time <= 0.5, risk), abs=1e-12)
    assert value > 0.7


def test_time_dependent_auroc_weights_censored_cases(gbsg2):
    time, event, risk = gbsg2
    value = time_dependent_auroc(time, event, risk, horizon=3.0)
    naive = roc_auc_score((time <= 3)[(time > 3) | (event == 1)], risk[(time > 3) | (event == 1)])
    assert 0.6 < value < 0.8 and value != pytest.approx(naive, abs=1e-9)


def test_threshold_outside_the_scores_is_a_clear_error(gbsg2):
    time, event, risk = gbsg2
    with pytest.raises(ConfigError, match="one group"):
        kaplan_meier_groups(time, event, risk, threshold=risk.max() + 1)
